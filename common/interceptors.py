"""The interceptors every agenthost server has, around every handler.

`ErrorMapping`: handlers hold no try/except; a domain error ends the
call with the code from `common/status.py` and its own message, a method left to its
generated default (NotImplementedError) is UNIMPLEMENTED, anything else is INTERNAL
with a generic message (the traceback logged). `Authorization`:
deny by default; one policy function per server decides, before the handler
runs, who the caller is (`Principal`) and whether it may call the method, and the
principal travels with the call (`common.principal.caller()`, log lines).

Each is a `CallHook` (what happens on entering, failing and leaving a call); a
server composes its hooks into one `HookedInterceptor`, which wraps each method's
handler once and reuses it, so a call pays for one interceptor whatever the number
of hooks (grpc.aio runs every interceptor's coroutine on every call). Knows gRPC,
the domain error classes and principals; nothing of what the handlers do.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from common.errors import AgentHostError, PermissionDenied
from common.principal import CALLER, CALLER_NOTE, Principal
from common.status import status_code

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Ctx = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]


class CallHook:
    """What one concern does around every call: enter, fail, leave."""

    def enter(self, method: str, request: Any, context: Ctx) -> Any:
        """Called before the handler; may raise a domain error to refuse the call."""
        return None

    async def fail(self, method: str, context: Ctx, exc: Exception) -> None:
        """Called when the handler (or an inner hook) raised; re-raises by default."""
        raise exc

    def leave(self, method: str, state: Any) -> None:
        """Called after the call, however it ended, with what enter returned."""


class HookedInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """One interceptor running hooks around each handler (the first hook outermost)."""

    def __init__(self, *hooks: CallHook) -> None:
        self.hooks = hooks
        # grpc.aio asks the interceptor on every call: wrap each method's handler
        # once and reuse it (rebuilt should the server hand out another handler).
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            wrapped = handler
            for hook in reversed(self.hooks):
                wrapped = _wrap(hook, method, wrapped)
            cached = self._wrapped[method] = (handler, wrapped)
        return cached[1]


def _wrap(hook: CallHook, method: str, handler: Handler) -> Handler:
    """handler with hook around it."""
    enter, fail, leave = hook.enter, hook.fail, hook.leave
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_call(request: Any, context: Ctx) -> Any:
            state = None
            try:
                state = enter(method, request, context)
                return await unary(request, context)  # type: ignore[arg-type]
            except Exception as exc:
                await fail(method, context, exc)
            finally:
                leave(method, state)

        return grpc.unary_unary_rpc_method_handler(
            unary_call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        stream = handler.unary_stream
        stream_call: Callable[[Any, Ctx], Any]
        if inspect.isasyncgenfunction(stream):

            async def stream_call(request: Any, context: Ctx) -> AsyncIterator[Any]:
                state = None
                try:
                    state = enter(method, request, context)
                    async for response in stream(request, context):  # type: ignore[arg-type]
                        yield response
                except Exception as exc:
                    await fail(method, context, exc)
                finally:
                    leave(method, state)

        else:
            # A coroutine that writes its responses with context.write()
            # (grpc.health.v1 Watch does).
            async def stream_call(request: Any, context: Ctx) -> None:
                state = None
                try:
                    state = enter(method, request, context)
                    await stream(request, context)  # type: ignore[arg-type, misc]
                except Exception as exc:
                    await fail(method, context, exc)
                finally:
                    leave(method, state)

        return grpc.unary_stream_rpc_method_handler(
            stream_call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


class ErrorMapping(CallHook):
    """Turns domain errors into status codes; anything else is INTERNAL, logged."""

    async def fail(self, method: str, context: Ctx, exc: Exception) -> None:
        """End the call with the status code of exc (re-raising the ones that are no errors)."""
        if isinstance(exc, AgentHostError):
            await context.abort(status_code(exc), str(exc))
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        if isinstance(exc, NotImplementedError) and context.code() is grpc.StatusCode.UNIMPLEMENTED:
            # a generated servicer's default method (it sets the code, then raises)
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented")
        log.error("%s failed", method, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, f"{method}: internal error")


Policy = Callable[[str, "Ctx"], Principal]
"""Decides who calls method (from the call's certificate or metadata) and whether it
may; raises Unauthenticated or PermissionDenied to refuse."""


class Authorization(CallHook):
    """Deny by default: every call passes the server's one policy before its handler."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def enter(self, method: str, request: Any, context: Ctx) -> Any:
        """Resolve the caller and bind it to the call (handlers, log lines, audit)."""
        note = CALLER_NOTE.get()
        try:
            principal = self.policy(method, context)
        except PermissionDenied as refused:
            if note is not None:
                note.caller = refused.caller
            raise
        if note is not None:
            note.caller = str(principal)
        return CALLER.set(principal)

    def leave(self, method: str, state: Any) -> None:
        """Unbind the caller."""
        if state is not None:
            CALLER.reset(state)
