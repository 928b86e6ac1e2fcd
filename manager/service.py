"""The gRPC face of the manager: `ManagerServicer`.

Each handler is a few lines: proto -> the shared core (`manager.core.Manager`) ->
proto. No try/except here: domain errors (the manager's subclass the daemon's)
become status codes in the one interceptor, `common.interceptors.ErrorMappingInterceptor`.
Knows gRPC and the core; nothing of daemons' channels, scheduling or storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from manager.core import Manager
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from protos import manager_pb2_grpc

if TYPE_CHECKING:
    Ctx = grpc.aio.ServicerContext[Any, Any]


class ManagerServicer(manager_pb2_grpc.ManagerServiceServicer):
    """ManagerService: registration and heartbeats from daemons; the user API."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    async def RegisterAgents(
        self, request: mpb.RegisterAgentsRequest, context: Ctx
    ) -> mpb.RegisterAgentsResponse:
        session_id = await self.manager.register(request)
        return mpb.RegisterAgentsResponse(session_id=session_id)

    async def Heartbeat(self, request: mpb.HeartbeatRequest, context: Ctx) -> mpb.HeartbeatResponse:
        await self.manager.heartbeat(request)
        return mpb.HeartbeatResponse()

    async def ListAgents(
        self, request: mpb.ManagerListAgentsRequest, context: Ctx
    ) -> mpb.ManagerListAgentsResponse:
        return mpb.ManagerListAgentsResponse(agents=self.manager.list_agents(request.scaling_group))

    async def CreateKernel(
        self, request: mpb.CreateKernelRequest, context: Ctx
    ) -> mpb.CreateKernelResponse:
        kernel = await self.manager.create_kernel(
            request.spec, request.scaling_group, request.agent_id
        )
        return mpb.CreateKernelResponse(kernel=kernel)

    async def ListKernels(
        self, request: mpb.ManagerListKernelsRequest, context: Ctx
    ) -> mpb.ManagerListKernelsResponse:
        kernels = self.manager.list_kernels(request.agent_id, request.scaling_group)
        return mpb.ManagerListKernelsResponse(kernels=kernels)

    async def GetKernel(
        self, request: pb.GetKernelRequest, context: Ctx
    ) -> mpb.ManagerKernelResponse:
        kernel = await self.manager.get_kernel(request.kernel_id, request.agent_id)
        return mpb.ManagerKernelResponse(kernel=kernel)

    async def DestroyKernel(
        self, request: pb.DestroyKernelRequest, context: Ctx
    ) -> mpb.ManagerKernelResponse:
        kernel = await self.manager.destroy_kernel(
            request.kernel_id, request.agent_id, request.grace_seconds
        )
        return mpb.ManagerKernelResponse(kernel=kernel)

    async def Execute(
        self, request: pb.ExecuteRequest, context: Ctx
    ) -> AsyncIterator[pb.ExecuteResponse]:
        async for message in self.manager.execute(request):
            yield message

    async def GetKernelLogs(
        self, request: pb.GetKernelLogsRequest, context: Ctx
    ) -> pb.GetKernelLogsResponse:
        return pb.GetKernelLogsResponse(logs=await self.manager.kernel_logs(request))
