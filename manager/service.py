"""The gRPC face of the manager: `ManagerServicer`.

Each handler is a few lines: proto -> the shared core (`manager.core.Manager`, or
the group controller `manager.groups.controller.GroupController`), with the caller
the authorization policy resolved (`caller()`) -> proto. An exec or a logs call
tells the controller that a group member was used (its group is not idle). No
try/except here: domain errors become status codes in the one interceptor,
`common.interceptors.ErrorMapping`.
Knows gRPC, the core and the controller; nothing of daemons' channels, scheduling
or storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from common.principal import caller
from manager.core import Manager
from manager.groups.controller import GroupController
from manager.groups.document import load_template, parse_documents
from manager.templates import TemplateRecord
from manager.tokens import TokenRecord
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from protos import manager_pb2_grpc

if TYPE_CHECKING:
    Ctx = grpc.aio.ServicerContext[Any, Any]


class ManagerServicer(manager_pb2_grpc.ManagerServiceServicer):
    """ManagerService: registration and heartbeats from daemons; the user API."""

    def __init__(self, manager: Manager, groups: GroupController) -> None:
        self.manager = manager
        self.groups = groups

    async def RegisterAgents(
        self, request: mpb.RegisterAgentsRequest, context: Ctx
    ) -> mpb.RegisterAgentsResponse:
        session_id = await self.manager.register(caller(), request)
        return mpb.RegisterAgentsResponse(session_id=session_id)

    async def RegisterKernels(
        self, request: mpb.RegisterKernelsRequest, context: Ctx
    ) -> mpb.RegisterKernelsResponse:
        await self.manager.register_kernels(caller(), request)
        return mpb.RegisterKernelsResponse()

    async def Heartbeat(self, request: mpb.HeartbeatRequest, context: Ctx) -> mpb.HeartbeatResponse:
        await self.manager.heartbeat(caller(), request)
        return mpb.HeartbeatResponse()

    async def ListAgents(
        self, request: mpb.ManagerListAgentsRequest, context: Ctx
    ) -> mpb.ManagerListAgentsResponse:
        return mpb.ManagerListAgentsResponse(agents=self.manager.list_agents(request.scaling_group))

    async def CreateKernel(
        self, request: mpb.CreateKernelRequest, context: Ctx
    ) -> mpb.CreateKernelResponse:
        kernel = await self.manager.create_kernel(
            caller(),
            request.spec,
            request.scaling_group,
            request.agent_id,
            request.template,
            request.delegate,
            request.delegate_limits,
        )
        return mpb.CreateKernelResponse(kernel=kernel)

    async def ListKernels(
        self, request: mpb.ManagerListKernelsRequest, context: Ctx
    ) -> mpb.ManagerListKernelsResponse:
        kernels, next_token = self.manager.list_kernels(
            caller(),
            request.agent_id,
            request.scaling_group,
            request.states,
            request.labels,
            request.page_size,
            request.page_token,
        )
        return mpb.ManagerListKernelsResponse(kernels=kernels, next_page_token=next_token)

    async def GetKernel(
        self, request: pb.GetKernelRequest, context: Ctx
    ) -> mpb.ManagerKernelResponse:
        kernel = await self.manager.get_kernel(caller(), request.kernel_id, request.agent_id)
        return mpb.ManagerKernelResponse(kernel=kernel)

    async def DestroyKernel(
        self, request: pb.DestroyKernelRequest, context: Ctx
    ) -> mpb.ManagerKernelResponse:
        kernel = await self.manager.destroy_kernel(
            caller(), request.kernel_id, request.agent_id, request.grace_seconds
        )
        return mpb.ManagerKernelResponse(kernel=kernel)

    async def Execute(
        self, request: pb.ExecuteRequest, context: Ctx
    ) -> AsyncIterator[pb.ExecuteResponse]:
        async for message in self.manager.execute(caller(), request):
            yield message
        self.groups.touch(request.kernel_id)

    async def GetKernelLogs(
        self, request: pb.GetKernelLogsRequest, context: Ctx
    ) -> pb.GetKernelLogsResponse:
        logs = await self.manager.kernel_logs(caller(), request)
        self.groups.touch(request.kernel_id)
        return logs

    async def StreamKernelLogs(
        self, request: pb.StreamKernelLogsRequest, context: Ctx
    ) -> AsyncIterator[pb.KernelLogChunk]:
        self.groups.touch(request.kernel_id)
        async for chunk in self.manager.stream_logs(caller(), request):
            yield chunk

    async def WaitKernel(
        self, request: pb.WaitKernelRequest, context: Ctx
    ) -> pb.WaitKernelResponse:
        return await self.manager.wait_kernel(caller(), request)

    async def WatchKernels(
        self, request: pb.WatchKernelsRequest, context: Ctx
    ) -> AsyncIterator[pb.KernelEvent]:
        async for event in self.manager.watch_kernels(caller(), request.agent_id):
            yield event

    async def PruneKernels(
        self, request: mpb.PruneKernelsRequest, context: Ctx
    ) -> mpb.PruneKernelsResponse:
        return mpb.PruneKernelsResponse(kernel_ids=await self.manager.prune(request.older_than))

    async def RemoveAgent(
        self, request: mpb.RemoveAgentRequest, context: Ctx
    ) -> mpb.RemoveAgentResponse:
        agent, forgotten = await self.manager.remove_agent(request.agent_id)
        return mpb.RemoveAgentResponse(agent=agent, kernels_forgotten=forgotten)

    async def CreateToken(
        self, request: mpb.CreateTokenRequest, context: Ctx
    ) -> mpb.CreateTokenResponse:
        token, record = await self.manager.create_token(
            caller(),
            request.name,
            request.admin,
            request.scaling_groups,
            request.expires_in,
            request.viewer,
        )
        return mpb.CreateTokenResponse(token=token, info=token_info(record))

    async def ListTokens(
        self, request: mpb.ListTokensRequest, context: Ctx
    ) -> mpb.ListTokensResponse:
        records = self.manager.tokens.list(request.include_revoked)
        return mpb.ListTokensResponse(tokens=[token_info(r) for r in records])

    async def RevokeToken(
        self, request: mpb.RevokeTokenRequest, context: Ctx
    ) -> mpb.RevokeTokenResponse:
        return mpb.RevokeTokenResponse(
            info=token_info(await self.manager.revoke_token(request.token))
        )

    async def ApplyTemplate(
        self, request: mpb.ApplyTemplateRequest, context: Ctx
    ) -> mpb.ApplyTemplateResponse:
        documents = [load_template(d) for d in parse_documents(request.document, request.format)]
        records = await self.manager.apply_templates(caller(), documents)
        return mpb.ApplyTemplateResponse(templates=[r.to_proto() for r in records])

    async def GetTemplate(
        self, request: mpb.GetTemplateRequest, context: Ctx
    ) -> mpb.TemplateResponse:
        return mpb.TemplateResponse(template=self.manager.templates.get(request.name).to_proto())

    async def ListTemplates(
        self, request: mpb.ListTemplatesRequest, context: Ctx
    ) -> mpb.ListTemplatesResponse:
        records: list[TemplateRecord] = self.manager.templates.list()
        return mpb.ListTemplatesResponse(templates=[r.to_proto() for r in records])

    async def DeleteTemplate(
        self, request: mpb.DeleteTemplateRequest, context: Ctx
    ) -> mpb.TemplateResponse:
        record = await self.manager.delete_template(caller(), request.name)
        return mpb.TemplateResponse(template=record.to_proto())

    async def CreateGroup(self, request: mpb.CreateGroupRequest, context: Ctx) -> mpb.GroupResponse:
        group = await self.groups.create_group(caller(), request.document, request.format)
        return mpb.GroupResponse(group=group)

    async def GetGroup(self, request: mpb.GetGroupRequest, context: Ctx) -> mpb.GroupResponse:
        return mpb.GroupResponse(group=self.groups.get_group(caller(), request.name))

    async def ListGroups(
        self, request: mpb.ListGroupsRequest, context: Ctx
    ) -> mpb.ListGroupsResponse:
        return mpb.ListGroupsResponse(groups=self.groups.list_groups(caller()))

    async def DeleteGroup(self, request: mpb.DeleteGroupRequest, context: Ctx) -> mpb.GroupResponse:
        return mpb.GroupResponse(group=await self.groups.delete_group(caller(), request.name))

    async def GetGroupTopology(
        self, request: mpb.GetGroupTopologyRequest, context: Ctx
    ) -> mpb.GroupTopology:
        return self.groups.topology(caller(), request.name)

    async def WatchGroup(
        self, request: mpb.WatchGroupRequest, context: Ctx
    ) -> AsyncIterator[mpb.Group]:
        async for group in self.groups.watch_group(caller(), request.name):
            yield group


def token_info(record: TokenRecord) -> mpb.TokenInfo:
    """What anyone may see of a token: everything but its secret (and its hash)."""
    return mpb.TokenInfo(
        token_id=record.token_id,
        name=record.name,
        admin=record.admin,
        scaling_groups=record.scaling_groups,
        created_at=record.created_at,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
        created_by=record.created_by,
        viewer=record.viewer,
        parent_kernel_id=record.parent_kernel_id,
    )
