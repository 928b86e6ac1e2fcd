"""The interceptor every agenthost server has: domain errors become status codes.

Handlers hold no try/except. A domain error raised by a handler ends the call
with the code from `common/status.py` and its own message; anything else is
INTERNAL with a generic message, the traceback logged. Knows gRPC and the domain
error classes; nothing of what the handlers do.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from common.errors import AgentHostError
from common.status import status_code

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Ctx = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Turns domain errors into status codes; anything else is INTERNAL, logged."""

    def __init__(self) -> None:
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
            cached = self._wrapped[method] = (handler, self._wrap(method, handler))
        return cached[1]

    @staticmethod
    def _wrap(method: str, handler: Handler) -> Handler:
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_call(request: Any, context: Ctx) -> Any:
                try:
                    return await unary(request, context)  # type: ignore[arg-type]
                except Exception as exc:
                    await _abort(context, method, exc)

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
                    try:
                        async for response in stream(request, context):  # type: ignore[arg-type]
                            yield response
                    except Exception as exc:
                        await _abort(context, method, exc)

            else:
                # A coroutine that writes its responses with context.write()
                # (grpc.health.v1 Watch does).
                async def stream_call(request: Any, context: Ctx) -> None:
                    try:
                        await stream(request, context)  # type: ignore[arg-type, misc]
                    except Exception as exc:
                        await _abort(context, method, exc)

            return grpc.unary_stream_rpc_method_handler(
                stream_call,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


async def _abort(context: Ctx, method: str, exc: Exception) -> None:
    """End the call with the status code of exc (re-raising the ones that are no errors)."""
    if isinstance(exc, AgentHostError):
        await context.abort(status_code(exc), str(exc))
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    log.error("%s failed", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"{method}: internal error")
