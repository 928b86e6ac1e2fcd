"""The gRPC face of the daemon: `AgentServicer` and the one error mapping.

Each handler routes (`runtime.get_agent`), calls the agent, converts. Domain
errors become status codes in `ErrorMappingInterceptor` only; handlers hold no
try/except. Knows gRPC and the runtime; nothing of backends.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from daemon import convert
from daemon.errors import (
    AgentHostError,
    AlreadyExists,
    CheckpointError,
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    Unsupported,
)
from daemon.ids import KernelId
from daemon.runtime import AgentRuntime
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Ctx = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]

STATUS_CODES: dict[type[AgentHostError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    CheckpointError: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Unsupported: grpc.StatusCode.UNIMPLEMENTED,
}


def status_code(exc: AgentHostError) -> grpc.StatusCode:
    """The gRPC status code of a domain error."""
    for cls in type(exc).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


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


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """AgentService: route by agent_id, call the agent, convert."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime

    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: Ctx
    ) -> pb.ListAgentsResponse:
        return pb.ListAgentsResponse(
            agents=[convert.agent_to_proto(s) for s in self.runtime.list_agents()]
        )

    async def CreateKernels(
        self, request: pb.CreateKernelsRequest, context: Ctx
    ) -> pb.CreateKernelsResponse:
        agent = self.runtime.get_agent(request.agent_id)
        kernels = await agent.create_kernels([convert.spec_from_proto(s) for s in request.kernels])
        return pb.CreateKernelsResponse(kernels=[convert.kernel_to_proto(k) for k in kernels])

    async def DestroyKernel(
        self, request: pb.DestroyKernelRequest, context: Ctx
    ) -> pb.DestroyKernelResponse:
        agent = self.runtime.get_agent(request.agent_id)
        kernel = await agent.destroy_kernel(KernelId(request.kernel_id), request.grace_seconds)
        return pb.DestroyKernelResponse(kernel=convert.kernel_to_proto(kernel))

    async def RestartKernel(
        self, request: pb.RestartKernelRequest, context: Ctx
    ) -> pb.RestartKernelResponse:
        agent = self.runtime.get_agent(request.agent_id)
        kernel = await agent.restart_kernel(KernelId(request.kernel_id))
        return pb.RestartKernelResponse(kernel=convert.kernel_to_proto(kernel))

    async def GetKernel(self, request: pb.GetKernelRequest, context: Ctx) -> pb.GetKernelResponse:
        agent = self.runtime.get_agent(request.agent_id)
        kernel = agent.get_kernel(KernelId(request.kernel_id))
        return pb.GetKernelResponse(kernel=convert.kernel_to_proto(kernel))

    async def GetKernelLogs(
        self, request: pb.GetKernelLogsRequest, context: Ctx
    ) -> pb.GetKernelLogsResponse:
        agent = self.runtime.get_agent(request.agent_id)
        logs = await agent.kernel_logs(KernelId(request.kernel_id), request.tail_lines)
        return pb.GetKernelLogsResponse(logs=logs)

    async def ListKernels(
        self, request: pb.ListKernelsRequest, context: Ctx
    ) -> pb.ListKernelsResponse:
        kernels = self.runtime.list_kernels(request.agent_id)
        return pb.ListKernelsResponse(kernels=[convert.kernel_to_proto(k) for k in kernels])

    async def Execute(
        self, request: pb.ExecuteRequest, context: Ctx
    ) -> AsyncIterator[pb.ExecuteResponse]:
        agent = self.runtime.get_agent(request.agent_id)
        events = agent.execute(
            KernelId(request.kernel_id), list(request.argv), request.stdin, request.timeout
        )
        async for event in events:
            yield convert.exec_event_to_proto(event)

    async def UpdateScalingGroup(
        self, request: pb.UpdateScalingGroupRequest, context: Ctx
    ) -> pb.UpdateScalingGroupResponse:
        status = await self.runtime.update_scaling_group(request.agent_id, request.scaling_group)
        return pb.UpdateScalingGroupResponse(agent=convert.agent_to_proto(status))

    async def CreateNetwork(
        self, request: pb.CreateNetworkRequest, context: Ctx
    ) -> pb.CreateNetworkResponse:
        agent = self.runtime.get_agent(request.agent_id)
        network_id = await agent.create_network(request.name)
        return pb.CreateNetworkResponse(name=request.name, network_id=network_id)

    async def DestroyNetwork(
        self, request: pb.DestroyNetworkRequest, context: Ctx
    ) -> pb.DestroyNetworkResponse:
        agent = self.runtime.get_agent(request.agent_id)
        await agent.destroy_network(request.name)
        return pb.DestroyNetworkResponse()
