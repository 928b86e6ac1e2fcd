"""daemon/hooks.py: loading hooks, pre_create's verdicts, post hooks in the background."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.errors import PermissionDenied
from common.ids import AgentId, KernelId
from common.kernel_events import EndReason
from common.principal import CALLER, Principal
from daemon.events import KernelJournal
from daemon.hooks import HookError, KernelContext, KernelHooks, LoadedHook, load_hook
from daemon.kernels import Kernel, KernelSpec, KernelState
from tests import hooks_fixture
from tests.hooks_fixture import DENY_REASON, calls

A0 = AgentId("a0")
ALICE = Principal(kind="token", role="user", name="alice")


def spec(kernel_id: str = "", **labels: str) -> KernelSpec:
    return KernelSpec(kernel_id=KernelId(kernel_id), labels=labels)


def kernel(kernel_id: str, state: KernelState = KernelState.RUNNING) -> Kernel:
    return Kernel(
        kernel_id=KernelId(kernel_id),
        agent_id=A0,
        backend="local",
        spec=spec(kernel_id, team="x"),
        state=state,
    )


def hooks_of(*objects: object, journal: KernelJournal | None = None) -> KernelHooks:
    return KernelHooks(
        [LoadedHook(f"test:{type(o).__name__}", o) for o in objects], journal or KernelJournal()
    )


@pytest.fixture(autouse=True)
def no_calls() -> Iterator[None]:
    hooks_fixture.CALLS.clear()
    yield
    hooks_fixture.CALLS.clear()


# ---------------------------------------------------------------------- loading


@dataclass(frozen=True)
class LoadCase:
    entry: str
    message: str


LOAD_CASES = [
    LoadCase(
        "no_colon",
        'not of the form "package.module:Factory" (an importable module, a '
        "colon, a callable in it)",
    ),
    LoadCase(
        "tests.hooks_fixture:",
        'not of the form "package.module:Factory" (an importable '
        "module, a colon, a callable in it)",
    ),
    LoadCase(
        "nowhere.policy:Hook",
        "no module 'nowhere.policy' on the daemon's Python path "
        "(install it, or add its directory to PYTHONPATH)",
    ),
    LoadCase(
        "tests.hooks_fixture:Missing", "module 'tests.hooks_fixture' has no attribute 'Missing'"
    ),
    LoadCase(
        "tests.hooks_fixture:NOT_CALLABLE",
        "'NOT_CALLABLE' in module 'tests.hooks_fixture' is not callable",
    ),
    LoadCase(
        "tests.hooks_fixture:broken_factory",
        "broken_factory() failed: OSError: policy file missing",
    ),
    LoadCase(
        "tests.hooks_fixture:Nothing",
        "Nothing() gave a Nothing object with none of the "
        "hook methods pre_create, post_create, post_terminate",
    ),
]


class TestLoadHook:
    def test_calls_the_factory_and_names_the_hook_by_its_entry(self) -> None:
        loaded = load_hook("tests.hooks_fixture:Recorder")
        assert loaded.name == "tests.hooks_fixture:Recorder"
        assert isinstance(loaded.hook, hooks_fixture.Recorder)

    def test_a_hook_may_have_only_some_of_the_methods(self) -> None:
        loaded = load_hook("tests.hooks_fixture:RaisingPre")
        assert loaded.method("pre_create") is not None
        assert loaded.method("post_create") is None

    @pytest.mark.parametrize("case", LOAD_CASES, ids=[c.entry for c in LOAD_CASES])
    def test_a_bad_entry_says_what_is_wrong(self, case: LoadCase) -> None:
        with pytest.raises(HookError) as caught:
            load_hook(case.entry)
        assert str(caught.value) == case.message

    def test_a_module_that_fails_to_import_says_why(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "needs_missing.py").write_text("import not_installed_anywhere\n")
        (tmp_path / "raises_on_import.py").write_text("raise ValueError('bad setting')\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        with pytest.raises(HookError) as caught:
            load_hook("needs_missing:Hook")
        assert str(caught.value) == (
            "importing module 'needs_missing' failed: ModuleNotFoundError: "
            "No module named 'not_installed_anywhere'"
        )
        with pytest.raises(HookError) as caught:
            load_hook("raises_on_import:Hook")
        assert str(caught.value) == (
            "importing module 'raises_on_import' failed: ValueError: bad setting"
        )

    def test_a_dotted_attribute_reaches_a_nested_factory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "nested_hooks.py").write_text(
            textwrap.dedent(
                """\
                class Outer:
                    class Hook:
                        def post_create(self, ctx):
                            pass
                """
            )
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        assert load_hook("nested_hooks:Outer.Hook").method("post_create") is not None


# --------------------------------------------------------------------- pre_create


class Allow:
    def __init__(self) -> None:
        self.seen: list[KernelContext] = []

    def pre_create(self, ctx: KernelContext) -> None:
        self.seen.append(ctx)


class Answers:
    """Answers every pre_create with the same thing."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def pre_create(self, ctx: KernelContext) -> Any:
        return self.answer


class Mutating:
    def pre_create(self, ctx: KernelContext) -> None:
        ctx.spec.labels["sneaky"] = "1"


class TestAdmit:
    async def test_none_allows_and_the_hook_sees_the_spec_before_any_id_exists(self) -> None:
        allow = Allow()
        token = CALLER.set(ALICE)
        try:
            await hooks_of(allow).admit(A0, [spec(team="x"), spec("chosen")])
        finally:
            CALLER.reset(token)
        assert [(c.agent_id, c.kernel_id, c.caller, c.kernel) for c in allow.seen] == [
            (A0, None, "token:alice", None),
            (A0, "chosen", "token:alice", None),
        ]
        assert allow.seen[0].spec.labels == {"team": "x"}

    async def test_a_reason_refuses_naming_the_spec_and_the_hook(self) -> None:
        hooks = KernelHooks([load_hook("tests.hooks_fixture:Recorder")], KernelJournal())
        with pytest.raises(PermissionDenied) as caught:
            await hooks.admit(A0, [spec("ok"), spec(deny="1")])
        assert str(caught.value) == (
            f"kernels[1]: refused by hook 'tests.hooks_fixture:Recorder': {DENY_REASON}"
        )
        with pytest.raises(PermissionDenied) as caught:
            await hooks.admit(A0, [spec("named", deny="1")])
        assert str(caught.value).startswith("kernel 'named': refused by hook")

    async def test_the_first_refusal_ends_the_batch_and_later_hooks_are_not_asked(self) -> None:
        after = Allow()
        with pytest.raises(PermissionDenied):
            await hooks_of(Answers("no"), after).admit(A0, [spec("k1"), spec("k2")])
        assert after.seen == []

    @pytest.mark.parametrize(
        ("answer", "message"),
        [
            ("", "kernel 'k': refused by hook 'test:Answers': no reason given"),
            (
                False,
                "kernel 'k': refused: hook 'test:Answers' gave no valid answer (the "
                "daemon's log has why)",
            ),
            (
                0,
                "kernel 'k': refused: hook 'test:Answers' gave no valid answer (the "
                "daemon's log has why)",
            ),
        ],
        ids=["empty reason", "false", "zero"],
    )
    async def test_anything_but_none_refuses(self, answer: object, message: str) -> None:
        with pytest.raises(PermissionDenied) as caught:
            await hooks_of(Answers(answer)).admit(A0, [spec("k")])
        assert str(caught.value) == message

    async def test_a_raising_sync_hook_fails_closed_and_runs_off_the_loop(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        hooks = KernelHooks([load_hook("tests.hooks_fixture:RaisingPre")])
        with pytest.raises(PermissionDenied) as caught:
            await hooks.admit(A0, [spec("k")])
        assert str(caught.value) == (
            "kernel 'k': refused: hook 'tests.hooks_fixture:RaisingPre' failed (the daemon's "
            "log has why)"
        )
        assert "policy service unreachable" not in str(caught.value)  # in the log only
        assert "hook tests.hooks_fixture:RaisingPre: pre_create failed" in caplog.text
        assert "policy service unreachable" in caplog.text
        (call,) = calls("pre_create", hook="RaisingPre")
        assert not call.in_loop_thread

    async def test_a_hook_changing_its_copy_changes_nothing_else(self) -> None:
        original = spec("k", team="x")
        allow = Allow()
        await hooks_of(Mutating(), allow).admit(A0, [original])
        assert original.labels == {"team": "x"}
        assert allow.seen[0].spec.labels == {"team": "x"}

    async def test_without_pre_create_hooks_everything_is_admitted(self) -> None:
        await KernelHooks().admit(A0, [spec(deny="1")])


# ------------------------------------------------------------------- post hooks


class Gate:
    """post_create waits for `opened`; every call is logged in order."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.log: list[tuple[str, str | None, str | None]] = []

    async def post_create(self, ctx: KernelContext) -> None:
        await self.opened.wait()
        self.log.append(("post_create", ctx.kernel_id, ctx.caller))

    async def post_terminate(self, ctx: KernelContext) -> None:
        assert ctx.kernel is not None
        self.log.append(("post_terminate", ctx.kernel_id, ctx.kernel.end_reason))


class Stuck:
    def __init__(self) -> None:
        self.cancelled = False

    async def post_create(self, ctx: KernelContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def drained(hooks: KernelHooks) -> None:
    await hooks.close(timeout=30)


class TestPostHooks:
    async def test_post_create_runs_in_the_background_with_the_record(self) -> None:
        hooks = KernelHooks([load_hook("tests.hooks_fixture:Recorder")], KernelJournal())
        token = CALLER.set(ALICE)
        try:
            hooks.created([kernel("k1"), kernel("k2")])
        finally:
            CALLER.reset(token)
        await drained(hooks)
        made = calls("post_create")
        assert [(c.kernel_id, c.caller, c.state, c.labels) for c in made] == [
            ("k1", "token:alice", "running", {"team": "x"}),
            ("k2", "token:alice", "running", {"team": "x"}),
        ]
        assert not any(c.in_loop_thread for c in made)  # a sync hook: in a thread

    async def test_post_terminate_hears_a_live_kernel_ending_and_nothing_else(self) -> None:
        journal = KernelJournal()
        hooks = KernelHooks([load_hook("tests.hooks_fixture:Recorder")], journal)
        running = kernel("k1")
        journal.record("added", running, None)
        journal.record("changed", running.ended(3, "exited", EndReason.EXITED), KernelState.RUNNING)
        # A kernel pending (a restart) that fails to start again ends too.
        pending = kernel("k2", KernelState.PENDING)
        ended = pending.ended(None, "restart failed", EndReason.DESTROYED)
        journal.record("changed", ended, KernelState.PENDING)
        # Not ends: an already terminated record restored, a record changing again,
        # a forgotten one.
        journal.record("added", kernel("k3").ended(0, "exited", EndReason.EXITED), None)
        journal.record("changed", ended, KernelState.TERMINATED)
        journal.record("removed", ended, KernelState.TERMINATED)
        journal.record("removed", kernel("k4", KernelState.PENDING), KernelState.PENDING)
        await drained(hooks)
        assert [
            (c.kernel_id, c.state, c.exit_code, c.end_reason, c.caller)
            for c in calls("post_terminate")
        ] == [
            ("k1", "terminated", 3, "exited", None),
            ("k2", "terminated", None, "destroyed", None),
        ]

    async def test_a_kernels_post_terminate_waits_for_its_post_create(self) -> None:
        journal = KernelJournal()
        gate = Gate()
        hooks = hooks_of(gate, journal=journal)
        hooks.created([kernel("k1")])
        journal.record(
            "changed", kernel("k1").ended(0, "exited", EndReason.EXITED), KernelState.RUNNING
        )
        for _ in range(10):
            await asyncio.sleep(0)
        assert gate.log == []  # post_create holds, and post_terminate waits behind it
        gate.opened.set()
        await drained(hooks)
        assert gate.log == [("post_create", "k1", None), ("post_terminate", "k1", "exited")]

    async def test_a_raising_hook_is_logged_by_name_and_the_next_hook_still_runs(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        journal = KernelJournal()
        hooks = KernelHooks(
            [
                load_hook("tests.hooks_fixture:RaisingPost"),
                load_hook("tests.hooks_fixture:Recorder"),
            ],
            journal,
        )
        with caplog.at_level(logging.ERROR):
            hooks.created([kernel("k1")])
            journal.record(
                "changed",
                kernel("k1").ended(None, "destroyed", EndReason.DESTROYED),
                KernelState.RUNNING,
            )
            await drained(hooks)
        assert [c.method for c in calls("post_create") + calls("post_terminate")] == [
            "post_create",
            "post_terminate",
        ]
        text = caplog.text
        assert "hook tests.hooks_fixture:RaisingPost: post_create failed for kernel k1" in text
        assert "hook tests.hooks_fixture:RaisingPost: post_terminate failed for kernel k1" in text
        assert "post_terminate hook is broken" in text

    async def test_close_cancels_what_runs_past_the_timeout_and_hears_no_more(self) -> None:
        journal = KernelJournal()
        stuck = Stuck()
        hooks = KernelHooks(
            [LoadedHook("test:Stuck", stuck), load_hook("tests.hooks_fixture:Recorder")],
            journal,
        )
        hooks.created([kernel("k1")])
        await asyncio.sleep(0)
        await hooks.close(timeout=0)
        assert stuck.cancelled
        journal.record(
            "changed", kernel("k2").ended(0, "exited", EndReason.EXITED), KernelState.RUNNING
        )
        hooks.created([kernel("k3")])
        await asyncio.sleep(0)
        assert calls("post_terminate") == [] and calls("post_create") == []

    def test_post_terminate_hooks_need_the_journal(self) -> None:
        with pytest.raises(ValueError, match="need the kernel journal"):
            KernelHooks([load_hook("tests.hooks_fixture:Recorder")])
