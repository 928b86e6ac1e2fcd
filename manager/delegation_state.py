"""The delegations in force, live: creates charged while in flight, and the cascade
that ends a delegating kernel's token and the kernels it created when it ends.

`manager/delegation.py` holds the arithmetic (what a create would cost, whether it
fits); this module holds what changes while the manager runs: the charges of
creates not yet in the kernel table (so two concurrent creates cannot both fit
where only one does), and one task per ending delegation that destroys its
children (and, through their own delegations, theirs). The manager reaches it
for every create by a delegated principal, every destroy (which answers once the
kernel's children are gone too) and every change of the kernel table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from common.errors import PermissionDenied, Unauthenticated
from common.ids import KernelId
from common.principal import Principal
from manager.delegation import DELEGATION_LABEL, Budget, owned_by, refusal, used
from manager.errors import DelegationExhausted
from manager.kernels import TERMINATED, ChangeKind, KernelChange, KernelRecord, KernelTable
from manager.store import Store
from manager.tokens import TokenRecord, TokenTable

log = logging.getLogger(__name__)

RemoveKernel = Callable[[KernelRecord], Awaitable[KernelRecord]]


class DelegationState:
    """Charges in flight and cascades of the manager's delegations."""

    def __init__(
        self,
        tokens: TokenTable,
        kernels: KernelTable,
        store: Store,
        remove_kernel: RemoveKernel,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.tokens = tokens
        self.kernels = kernels
        self.store = store
        self._remove_kernel = remove_kernel
        self._spawn = spawn
        # Creates of delegated principals in flight: owner -> kernel id -> its charge.
        self._charging: dict[str, dict[KernelId, Budget]] = {}
        # Children being ended because their parent ended, by the parent's token id.
        self._cascades: dict[str, asyncio.Task[None]] = {}

    @property
    def cascades(self) -> list[asyncio.Task[None]]:
        """The cascades under way (cancelled when the manager closes)."""
        return list(self._cascades.values())

    def grant_of(self, record: KernelRecord) -> TokenRecord | None:
        """The delegated token record's kernel was given, if any (matched by its label,
        so a later kernel reusing the id does not inherit it)."""
        grant = self.tokens.delegation_of(record.kernel_id)
        label = record.kernel.spec.labels.get(DELEGATION_LABEL)
        return grant if grant is not None and label == grant.token_id else None

    def charge(self, principal: Principal, kernel_id: KernelId, charge: Budget) -> None:
        """Count charge against principal's delegation while kernel_id is being created;
        DelegationExhausted, naming each limit it would pass, when it does not fit."""
        owner = str(principal)
        grant = self.tokens.get(principal.token_id)
        if grant is None or grant.limits is None:
            raise PermissionDenied(f"{principal} is not a delegation this manager knows")
        in_use = used(owner, owned_by(self.kernels.values()), self.grant_of)
        for pending in self._charging.get(owner, {}).values():
            in_use += pending
        problem = refusal(grant.limits, in_use, charge)
        if problem is not None:
            raise DelegationExhausted(
                f"kernel {kernel_id!r} would pass the limits kernel "
                f"{principal.parent_kernel_id!r} was given for what it creates: {problem}"
            )
        self._charging.setdefault(owner, {})[kernel_id] = charge

    def settle(self, owner: str, kernel_id: KernelId) -> None:
        """kernel_id's create is over (in the table now, or failed): no longer in flight."""
        self._charging.get(owner, {}).pop(kernel_id, None)

    async def undo_if_orphaned(self, principal: Principal, kernel_id: KernelId) -> None:
        """Destroy kernel_id again if principal's kernel ended while it was being created
        (its children were being ended then, without it); Unauthenticated saying so."""
        grant = self.tokens.get(principal.token_id)
        if grant is not None and not grant.revoked_at:
            return
        record = self.kernels.get(kernel_id)
        if record is not None:
            await self._remove_kernel(record)
            await self.children_ended(record)
        raise Unauthenticated(
            f"kernel {principal.parent_kernel_id!r} ended while kernel {kernel_id!r} was being "
            "created for it: its delegated token no longer works, and that kernel was "
            "destroyed again"
        )

    def on_kernel_change(self, change: KernelChange) -> None:
        """A kernel that ended: its token stops now, its children are ended after."""
        record = change.record
        # ADDED too: a kernel can be first heard of when it has ended already.
        ended = change.kind is ChangeKind.FORGOTTEN or record.kernel.state == TERMINATED
        if ended:
            grant = self.grant_of(record)
            if grant is not None:
                self.end(grant, "it ended")

    def sweep(self) -> None:
        """At start: end the delegations of kernels that ended while nobody listened."""
        for grant in self.tokens.delegations():
            record = self.kernels.get(KernelId(grant.parent_kernel_id))
            if record is None or self.grant_of(record) is not grant or not record.holds_resources:
                self.end(grant, "it ended while the manager was down")

    def end(self, grant: TokenRecord, why: str) -> None:
        """Revoke grant (at once, in memory) and end the kernels created with it."""
        if not grant.revoked_at:
            grant = self.tokens.revoke(grant.token_id)
            self._spawn(self.store.save_token(grant))
            log.info(
                "kernel %s: %s, so its delegated token %s no longer works",
                grant.parent_kernel_id,
                why,
                grant.token_id,
            )
        running = self._cascades.get(grant.token_id)
        if running is not None and not running.done():
            return
        if not any(r.owner == grant.owner for r in self.kernels.values()):
            return
        token_id = grant.token_id
        task = asyncio.create_task(self._end_children(grant), name=f"end {grant.owner}")
        self._cascades[token_id] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._cascades.get(token_id) is finished:
                del self._cascades[token_id]

        task.add_done_callback(done)

    async def children_ended(self, record: KernelRecord) -> None:
        """Return once the kernels record's kernel created are being ended no more."""
        grant = self.grant_of(record)
        task = self._cascades.get(grant.token_id) if grant is not None else None
        if task is not None:
            await asyncio.shield(task)

    async def _end_children(self, grant: TokenRecord) -> None:
        """Destroy (and forget) every kernel created with grant, and their children."""
        await asyncio.sleep(0)  # out of the kernel table's callback
        children = [r for r in self.kernels.values() if r.owner == grant.owner]
        log.info(
            "kernel %s ended: ending the %d kernels it created",
            grant.parent_kernel_id,
            len(children),
        )
        results = await asyncio.gather(
            *(self._end_child(r) for r in children), return_exceptions=True
        )
        for record, result in zip(children, results, strict=True):
            if isinstance(result, Exception):
                log.warning(
                    "kernel %s (created by kernel %s) not destroyed: %s",
                    record.kernel_id,
                    grant.parent_kernel_id,
                    result,
                )

    async def _end_child(self, record: KernelRecord) -> None:
        if self.kernels.get(record.kernel_id) is record:
            await self._remove_kernel(record)
        await self.children_ended(record)
