"""Lifecycle hooks for tests, named in a daemon config as `tests.hooks_fixture:<Factory>`.

Test daemons run in the test's own process, so every call a hook hears is appended
to `CALLS`, which tests read (and clear between tests).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from daemon.hooks import KernelContext

DENY_REASON = "kernels labelled deny=1 may not run on this node"


@dataclass(frozen=True)
class Call:
    """One hook call as the hook saw it."""

    hook: str
    method: str
    agent_id: str
    kernel_id: str | None
    caller: str | None
    labels: dict[str, str]
    state: str | None = None
    exit_code: int | None = None
    end_reason: str | None = None
    status_message: str = ""
    in_loop_thread: bool = False  # whether it ran on the event loop's thread


CALLS: list[Call] = []
_lock = threading.Lock()


def record(hook: str, method: str, ctx: KernelContext) -> None:
    """Append what hook's method was told."""
    kernel = ctx.kernel
    call = Call(
        hook=hook,
        method=method,
        agent_id=ctx.agent_id,
        kernel_id=ctx.kernel_id,
        caller=ctx.caller,
        labels=dict(ctx.spec.labels),
        state=None if kernel is None else kernel.state.value,
        exit_code=None if kernel is None else kernel.exit_code,
        end_reason=None if kernel is None or kernel.end_reason is None else str(kernel.end_reason),
        status_message="" if kernel is None else kernel.status_message,
        in_loop_thread=_in_loop_thread(),
    )
    with _lock:
        CALLS.append(call)


def calls(method: str, kernel_id: str | None = None, hook: str = "Recorder") -> list[Call]:
    """The calls of one method so far (of one kernel, when given)."""
    with _lock:
        return [
            c
            for c in CALLS
            if c.hook == hook and c.method == method and kernel_id in (None, c.kernel_id)
        ]


def _in_loop_thread() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Recorder:
    """Refuses kernels labelled deny=1 (async); records every call (post_create sync,
    post_terminate async)."""

    async def pre_create(self, ctx: KernelContext) -> str | None:
        record("Recorder", "pre_create", ctx)
        return DENY_REASON if ctx.spec.labels.get("deny") == "1" else None

    def post_create(self, ctx: KernelContext) -> None:
        record("Recorder", "post_create", ctx)

    async def post_terminate(self, ctx: KernelContext) -> None:
        record("Recorder", "post_terminate", ctx)


class RaisingPost:
    """Post hooks that record, then raise; they must fail nothing."""

    async def post_create(self, ctx: KernelContext) -> None:
        record("RaisingPost", "post_create", ctx)
        raise RuntimeError("post_create hook is broken")

    def post_terminate(self, ctx: KernelContext) -> None:
        record("RaisingPost", "post_terminate", ctx)
        raise RuntimeError("post_terminate hook is broken")


class RaisingPre:
    """A sync pre_create that raises: the create must be refused (fail closed)."""

    def pre_create(self, ctx: KernelContext) -> str | None:
        record("RaisingPre", "pre_create", ctx)
        raise RuntimeError("policy service unreachable")


class Nothing:
    """Has none of the hook methods."""

    def post_start(self, ctx: KernelContext) -> None:
        """Not a hook method."""


def broken_factory() -> Recorder:
    """A factory that fails."""
    raise OSError("policy file missing")


NOT_CALLABLE = 42
