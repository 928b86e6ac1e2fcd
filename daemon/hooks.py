"""Lifecycle hooks: code the operator plugs in to veto kernel creations and to hear of
every kernel's start and end, loaded from `[daemon] hooks`.

A hook is any object with one or more of the three methods of `KernelHook`, each
sync or async: `pre_create` may refuse a spec before anything is allocated for it
(no kernel id, slot, port, uid or process), `post_create` hears of a kernel once it
runs, `post_terminate` of every way a kernel ends (destroyed, exited by itself,
OOM-killed, found gone by reconcile or by recovery after a restart). Async methods
are awaited on the loop; sync ones run in a thread, so no hook blocks the loop.

`KernelHooks` runs them. A `pre_create` that refuses, raises or answers something
else than None or a reason refuses the create (`PermissionDenied`, naming the
hook): a policy that fails, fails closed. Post hooks run as background tasks, in
order per kernel (a kernel's post_create before its post_terminate); one that
raises is logged with its name and fails nothing. post_terminate hears of ends
from the kernel journal (`daemon/events.py`), the one place every end is recorded,
so no path can forget to call it. Knows kernel records, the journal and the
caller of the call being served; nothing of backends, agents' slices or gRPC.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import importlib
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from common.errors import PermissionDenied
from common.ids import AgentId, KernelId
from common.principal import CALLER
from common.validation import spec_place
from daemon.events import KernelEvent, KernelJournal
from daemon.kernels import Kernel, KernelSpec

log = logging.getLogger(__name__)

Method = Literal["pre_create", "post_create", "post_terminate"]
HOOK_METHODS: tuple[Method, ...] = ("pre_create", "post_create", "post_terminate")

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_ENTRY_RE = re.compile(rf"{_NAME}(\.{_NAME})*:{_NAME}(\.{_NAME})*")
ENTRY_SYNTAX = '"package.module:Factory" (an importable module, a colon, a callable in it)'

# Seconds post hooks that were cancelled at shutdown get to unwind.
CANCEL_WAIT = 1.0


@dataclass(frozen=True)
class KernelContext:
    """What a hook is told about one kernel.

    kernel_id is None in pre_create unless the caller chose the id: nothing, not
    even an id, is allocated before pre_create allows the spec. caller is the
    principal of the call being served as logs name it (`token:alice`,
    `user/alice`); None when no call caused it (a kernel that ended by itself or
    was found gone). kernel is the record: running for post_create; terminated,
    with exit_code, end_reason and status_message, for post_terminate; None in
    pre_create. spec and kernel are the hook's own copies.
    """

    agent_id: AgentId
    kernel_id: KernelId | None
    spec: KernelSpec
    caller: str | None
    kernel: Kernel | None = None


class KernelHook(Protocol):
    """A lifecycle hook; a hook implements any of these, each sync or async."""

    def pre_create(self, ctx: KernelContext) -> str | Awaitable[str | None] | None:
        """None to allow the spec, or the reason to refuse it."""
        ...

    def post_create(self, ctx: KernelContext) -> Awaitable[None] | None:
        """The kernel runs."""
        ...

    def post_terminate(self, ctx: KernelContext) -> Awaitable[None] | None:
        """The kernel has ended, however it ended."""
        ...


class HookError(ValueError):
    """A `[daemon] hooks` entry cannot be used; the message says why."""


@dataclass(frozen=True)
class LoadedHook:
    """One configured hook: its entry as written (its name in messages) and the object."""

    name: str
    hook: object

    def method(self, name: Method) -> Callable[[KernelContext], Any] | None:
        """The hook's method of that name, if it has one."""
        found = getattr(self.hook, name, None)
        return found if callable(found) else None


def parse_entry(entry: str) -> tuple[str, str]:
    """The module and the factory's attribute path of a `package.module:Factory` entry."""
    if not _ENTRY_RE.fullmatch(entry):
        raise HookError(f"not of the form {ENTRY_SYNTAX}")
    module, _, attribute = entry.partition(":")
    return module, attribute


def load_hook(entry: str) -> LoadedHook:
    """Import entry's module and call its factory with no arguments; HookError saying
    what is wrong (no such module, no such attribute, a factory that fails or gives
    an object with none of the hook methods)."""
    module_name, attribute = parse_entry(entry)
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise HookError(
                f"no module {module_name!r} on the daemon's Python path (install it, or "
                "add its directory to PYTHONPATH)"
            ) from None
        raise HookError(f"importing module {module_name!r} failed: {_described(exc)}") from None
    except Exception as exc:
        raise HookError(f"importing module {module_name!r} failed: {_described(exc)}") from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise HookError(f"module {module_name!r} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not callable(found):
        raise HookError(f"{attribute!r} in module {module_name!r} is not callable")
    try:
        hook = found()
    except Exception as exc:
        raise HookError(f"{attribute}() failed: {_described(exc)}") from None
    loaded = LoadedHook(entry, hook)
    if not any(loaded.method(m) for m in HOOK_METHODS):
        raise HookError(
            f"{attribute}() gave a {type(hook).__name__} object with none of the hook "
            f"methods {', '.join(HOOK_METHODS)}"
        )
    return loaded


def _described(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class KernelHooks:
    """The daemon's hooks, run around every kernel's life.

    Built with the daemon's kernel journal before any agent recovers, so ends found
    at recovery reach post_terminate too.
    """

    def __init__(
        self, hooks: Sequence[LoadedHook] = (), journal: KernelJournal | None = None
    ) -> None:
        """journal is where kernel ends are heard of (needed once a hook has post_terminate)."""
        self.hooks = tuple(hooks)
        self._tasks: set[asyncio.Task[None]] = set()
        # The latest post-hook task of each kernel: the next one waits for it.
        self._last: dict[KernelId, asyncio.Task[None]] = {}
        self._closed = False
        self._unsubscribe: Callable[[], None] = lambda: None
        if self._having("post_terminate"):
            if journal is None:
                raise ValueError("post_terminate hooks need the kernel journal to hear of ends")
            self._unsubscribe = journal.subscribe(self._on_event)

    async def admit(self, agent_id: AgentId, specs: Sequence[KernelSpec]) -> None:
        """Ask every pre_create hook about every spec, in order; PermissionDenied at the
        first refusal, naming the spec and the hook."""
        hooks = self._having("pre_create")
        if not hooks:
            return
        caller = _caller()
        for index, spec in enumerate(specs):
            where = spec_place(spec.kernel_id, index)
            for hook in hooks:
                ctx = KernelContext(agent_id, spec.kernel_id or None, spec, caller)
                try:
                    verdict = await _call(hook, "pre_create", ctx)
                except Exception:
                    log.exception(
                        "hook %s: pre_create failed on agent %s; the create is refused",
                        hook.name,
                        agent_id,
                    )
                    raise PermissionDenied(
                        f"{where}refused: hook {hook.name!r} failed (the daemon's log has why)"
                    ) from None
                if verdict is None:
                    continue
                if not isinstance(verdict, str):
                    log.error(
                        "hook %s: pre_create answered %r, not None (allow) or a reason "
                        "(refuse); the create is refused",
                        hook.name,
                        verdict,
                    )
                    raise PermissionDenied(
                        f"{where}refused: hook {hook.name!r} gave no valid answer "
                        "(the daemon's log has why)"
                    )
                raise PermissionDenied(
                    f"{where}refused by hook {hook.name!r}: {verdict or 'no reason given'}"
                )

    def created(self, kernels: Sequence[Kernel]) -> None:
        """Run post_create for kernels that now run, in the background."""
        for kernel in kernels:
            self._schedule("post_create", kernel)

    async def close(self, timeout: float) -> None:
        """Hear of no more ends; give running post hooks timeout seconds, then cancel them."""
        self._closed = True
        self._unsubscribe()
        tasks = set(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        if not pending:
            return
        log.warning("cancelling %d post hook call(s) still running at shutdown", len(pending))
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CANCEL_WAIT)

    def _on_event(self, event: KernelEvent) -> None:
        # Only a live kernel turning terminated: not a terminated record restored from
        # the checkpoint (its end was heard in its daemon's life), nor a kernel forgotten.
        if event.kind == "changed" and event.ends:
            self._schedule("post_terminate", event.kernel)

    def _schedule(self, method: Method, kernel: Kernel) -> None:
        hooks = self._having(method)
        if not hooks:
            return
        if self._closed:
            log.warning(
                "kernel %s: %s hooks not run: the daemon is shutting down", kernel.kernel_id, method
            )
            return
        ctx = KernelContext(kernel.agent_id, kernel.kernel_id, kernel.spec, _caller(), kernel)
        previous = self._last.get(kernel.kernel_id)
        task = asyncio.get_running_loop().create_task(
            self._run(method, hooks, ctx, previous),
            name=f"hook {method} {kernel.agent_id}/{kernel.kernel_id}",
        )
        self._tasks.add(task)
        self._last[kernel.kernel_id] = task
        task.add_done_callback(lambda done: self._finished(kernel.kernel_id, done))

    async def _run(
        self,
        method: Method,
        hooks: Sequence[LoadedHook],
        ctx: KernelContext,
        previous: asyncio.Task[None] | None,
    ) -> None:
        if previous is not None:
            await asyncio.wait({previous})  # how it ended is its own business
        for hook in hooks:
            try:
                await _call(hook, method, ctx)
            except Exception:
                log.exception(
                    "hook %s: %s failed for kernel %s on agent %s (ignored)",
                    hook.name,
                    method,
                    ctx.kernel_id,
                    ctx.agent_id,
                )

    def _finished(self, kernel_id: KernelId, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._last.get(kernel_id) is task:
            del self._last[kernel_id]

    def _having(self, method: Method) -> list[LoadedHook]:
        return [h for h in self.hooks if h.method(method) is not None]


# Synchronous hooks run here, not in the loop's few threads for the daemon's own
# blocking work (`common/serving.py`): a slow hook delays other hooks, never a
# checkpoint write or a log read.
_SYNC_HOOK_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hook")


async def _call(hook: LoadedHook, method: Method, ctx: KernelContext) -> Any:
    """Call one hook method with its own copy of ctx: awaited if async, else in a
    thread (the answer awaited too if it is awaitable)."""
    function = hook.method(method)
    assert function is not None
    ctx = dataclasses.replace(
        ctx,
        spec=ctx.spec.model_copy(deep=True),
        kernel=None if ctx.kernel is None else ctx.kernel.model_copy(deep=True),
    )
    if inspect.iscoroutinefunction(function):
        return await function(ctx)
    context = contextvars.copy_context()
    result = await asyncio.get_running_loop().run_in_executor(
        _SYNC_HOOK_THREADS, context.run, function, ctx
    )
    if inspect.isawaitable(result):
        return await result
    return result


def _caller() -> str | None:
    principal = CALLER.get()
    return None if principal is None else str(principal)
