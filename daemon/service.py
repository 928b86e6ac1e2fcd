"""The gRPC face of the daemon: `AgentServicer`.

Each handler routes (`runtime.get_agent`), calls the agent, converts. Domain
errors become status codes in the one interceptor (`common/interceptors.py`);
handlers hold no try/except. Knows gRPC and the runtime; nothing of backends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from common.ids import KernelId
from common.limits import DEFAULT_LOG_BYTES
from daemon import convert, watch
from daemon.runtime import AgentRuntime
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc

if TYPE_CHECKING:
    Ctx = grpc.aio.ServicerContext[Any, Any]


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
        tail = await agent.kernel_logs(
            KernelId(request.kernel_id), request.tail_lines, request.max_bytes or DEFAULT_LOG_BYTES
        )
        return pb.GetKernelLogsResponse(logs=tail.data, truncated=tail.truncated)

    async def StreamKernelLogs(
        self, request: pb.StreamKernelLogsRequest, context: Ctx
    ) -> AsyncIterator[pb.KernelLogChunk]:
        agent = self.runtime.get_agent(request.agent_id)
        chunks = agent.stream_logs(KernelId(request.kernel_id), request.tail_lines, request.follow)
        async for data in chunks:
            yield pb.KernelLogChunk(data=data)

    async def ListKernels(
        self, request: pb.ListKernelsRequest, context: Ctx
    ) -> pb.ListKernelsResponse:
        kernels, next_token = self.runtime.list_kernels_page(
            request.agent_id,
            convert.states_from_proto(request.states),
            request.labels,
            request.page_size,
            request.page_token,
            convert.kernel_to_proto,
        )
        return pb.ListKernelsResponse(kernels=kernels, next_page_token=next_token)

    async def Execute(
        self, request: pb.ExecuteRequest, context: Ctx
    ) -> AsyncIterator[pb.ExecuteResponse]:
        agent = self.runtime.get_agent(request.agent_id)
        events = agent.execute(
            KernelId(request.kernel_id), list(request.argv), request.stdin, request.timeout
        )
        async for event in events:
            yield convert.exec_event_to_proto(event)

    async def WaitKernel(
        self, request: pb.WaitKernelRequest, context: Ctx
    ) -> pb.WaitKernelResponse:
        return await watch.wait_kernel(
            self.runtime, request.agent_id, request.kernel_id, request.timeout
        )

    async def WatchKernels(
        self, request: pb.WatchKernelsRequest, context: Ctx
    ) -> AsyncIterator[pb.KernelEvent]:
        async for event in watch.watch_kernels(self.runtime, request.agent_id):
            yield event

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
