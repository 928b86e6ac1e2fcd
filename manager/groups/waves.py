"""Start waves: Kahn's algorithm over the roles' dependencies, and the cycle when there is one.

Wave 1 holds the roles that depend on nothing; wave n+1 the roles whose
dependencies are all in earlier waves. Within a wave roles keep the document's
order. Pure: no I/O, linear in roles plus dependencies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class DependencyCycle(ValueError):
    """The dependencies loop; `cycle` lists it, first role repeated at the end."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("dependsOn has a cycle: " + " -> ".join(cycle))


def kahn_waves(depends_on: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """The roles in start waves; DependencyCycle if they cannot all be ordered.

    depends_on maps every role (in document order) to the roles it needs; every
    named dependency must be a key.
    """
    order = {role: i for i, role in enumerate(depends_on)}
    waiting = {role: len(set(needs)) for role, needs in depends_on.items()}
    dependents: dict[str, list[str]] = {role: [] for role in depends_on}
    for role, needs in depends_on.items():
        for need in set(needs):
            dependents[need].append(role)
    wave = [role for role, n in waiting.items() if n == 0]
    waves: list[list[str]] = []
    placed = 0
    while wave:
        waves.append(wave)
        placed += len(wave)
        following = []
        for role in wave:
            for dependent in dependents[role]:
                waiting[dependent] -= 1
                if waiting[dependent] == 0:
                    following.append(dependent)
        wave = sorted(following, key=order.__getitem__)
    if placed != len(depends_on):
        raise DependencyCycle(find_cycle(depends_on))
    return waves


def find_cycle(depends_on: Mapping[str, Sequence[str]]) -> list[str]:
    """One cycle of the dependencies (first role repeated at the end), or [] if none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in depends_on:
        if state.get(start):
            continue
        path: list[str] = [start]
        stack = [iter(depends_on[start])]
        state[start] = 1
        while stack:
            need = next(stack[-1], None)
            if need is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if state.get(need) == 1:
                return [*path[path.index(need) :], need]
            if not state.get(need):
                state[need] = 1
                path.append(need)
                stack.append(iter(depends_on[need]))
    return []
