"""protos/manager.proto: the RPC names are a contract."""

from __future__ import annotations

from protos import manager_pb2


class TestManagerService:
    def test_rpc_names(self) -> None:
        service = manager_pb2.DESCRIPTOR.services_by_name["ManagerService"]
        assert service.full_name == "agenthost.v1.ManagerService"
        assert [m.name for m in service.methods] == [
            "RegisterAgents",
            "RegisterKernels",
            "Heartbeat",
            "ListAgents",
            "CreateKernel",
            "ListKernels",
            "GetKernel",
            "DestroyKernel",
            "Execute",
            "GetKernelLogs",
            "StreamKernelLogs",
            "WaitKernel",
            "WatchKernels",
            "PruneKernels",
            "RemoveAgent",
            "CreateToken",
            "ListTokens",
            "RevokeToken",
            "ApplyTemplate",
            "GetTemplate",
            "ListTemplates",
            "DeleteTemplate",
            "CreateGroup",
            "GetGroup",
            "ListGroups",
            "DeleteGroup",
            "GetGroupTopology",
            "WatchGroup",
        ]

    def test_execute_streams_and_kernel_calls_reuse_the_daemons_requests(self) -> None:
        methods = manager_pb2.DESCRIPTOR.services_by_name["ManagerService"].methods_by_name
        assert methods["Execute"].server_streaming
        for name in ("GetKernel", "DestroyKernel", "Execute", "GetKernelLogs"):
            request = methods[name].input_type
            assert request.file.name == "protos/agent.proto", name
            assert [f.name for f in request.fields[:2]] == ["agent_id", "kernel_id"], name

    def test_watch_group_streams(self) -> None:
        methods = manager_pb2.DESCRIPTOR.services_by_name["ManagerService"].methods_by_name
        assert methods["WatchGroup"].server_streaming
        assert not methods["GetGroup"].server_streaming
