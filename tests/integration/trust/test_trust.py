"""Trust over real TLS on loopback: certificates, identities, tokens and scopes.

A manager with `[manager.tls]` and two daemons (`n1`, `n2`) with `[daemon.tls]`,
all in this process (tests/clusters.py), certificates from one session CA; a second
CA stands for strangers. Every refusal is checked by the code the caller sees.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from common.credentials import issue
from common.principal import bind_caller_to_log_records
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc, manager_pb2_grpc
from protos import manager_pb2 as mpb
from tests.clusters import Cluster, trusted_cluster
from tests.managers import (
    HEARTBEAT,
    admin_token,
    agents_by_id,
    agents_toml,
    linked_daemon_config,
    manager_config,
    running_manager,
)
from tests.pki import Pki
from tests.servers import AGENTHOST, eventually, running_daemon, sleeper

DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@pytest.fixture
async def cluster(pki: Pki, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with trusted_cluster(pki, tmp_path) as running:
        yield running


async def code_of_call(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


class TestTransport:
    async def test_a_plaintext_client_is_refused_on_every_port(self, cluster: Cluster) -> None:
        ports = [cluster.users, cluster.manager.server.daemon_address]
        ports += [d.server.address for d in cluster.daemons.values()]
        for address in ports:
            async with grpc.aio.insecure_channel(address) as channel:
                call = manager_pb2_grpc.ManagerServiceStub(channel).ListAgents(
                    mpb.ManagerListAgentsRequest(), timeout=5
                )
                assert await code_of_call(call) == UNAVAILABLE, address

    async def test_a_certificate_of_another_ca_is_refused_where_certificates_count(
        self, cluster: Cluster, stranger: Pki
    ) -> None:
        fake_manager = stranger.files("manager", "m1")
        for address in (
            cluster.daemons["n1"].server.address,
            cluster.manager.server.daemon_address,
        ):
            # The stranger trusts our CA (to get past its own check of the server); the
            # server does not trust the stranger's certificate.
            credentials = grpc.ssl_channel_credentials(
                cluster.pki.ca.read_bytes(),
                fake_manager.key.read_bytes(),
                fake_manager.cert.read_bytes(),
            )
            async with grpc.aio.secure_channel(address, credentials) as channel:
                call = agent_pb2_grpc.AgentServiceStub(channel).ListAgents(
                    pb.ListAgentsRequest(), timeout=5
                )
                assert await code_of_call(call) == UNAVAILABLE, address

    async def test_a_client_without_a_token_is_unauthenticated(self, cluster: Cluster) -> None:
        async with cluster.channel(None) as channel:
            stub = manager_pb2_grpc.ManagerServiceStub(channel)
            for call in (
                stub.ListAgents(mpb.ManagerListAgentsRequest(), timeout=5),
                stub.CreateKernel(mpb.CreateKernelRequest(spec=sleeper()), timeout=5),
            ):
                assert await code_of_call(call) == UNAUTHENTICATED

    async def test_a_bad_token_is_unauthenticated(self, cluster: Cluster) -> None:
        async with cluster.channel("aht_0123456789ab_forged") as channel:
            call = manager_pb2_grpc.ManagerServiceStub(channel).ListAgents(
                mpb.ManagerListAgentsRequest(), timeout=5
            )
            assert await code_of_call(call) == UNAUTHENTICATED

    async def test_only_the_manager_or_an_admin_user_drive_a_daemon(self, cluster: Cluster) -> None:
        address = cluster.daemons["n2"].server.address
        for role, name, admin, expected in (
            ("daemon", "n1", False, DENIED),
            ("user", "alice", False, DENIED),
            ("user", "root", True, grpc.StatusCode.OK),
            ("manager", "m1", False, grpc.StatusCode.OK),
        ):
            files = cluster.pki.files(role, name, admin=admin)
            async with grpc.aio.secure_channel(address, files.channel_credentials()) as channel:
                call = agent_pb2_grpc.AgentServiceStub(channel).ListAgents(
                    pb.ListAgentsRequest(), timeout=5
                )
                assert await code_of_call(call) == expected, (role, name)


class TestDaemonIdentity:
    async def daemon_stub(self, cluster: Cluster, name: str) -> grpc.aio.Channel:
        files = cluster.pki.files("daemon", name)
        return grpc.aio.secure_channel(
            cluster.manager.server.daemon_address, files.channel_credentials()
        )

    async def test_daemons_are_registered_under_their_certificate_names(
        self, cluster: Cluster
    ) -> None:
        registry = cluster.manager.server.manager.registry
        assert {r.agent_id: r.daemon_id for r in registry.list()} == {
            "w1": "n1",
            "x1": "n1",
            "w2": "n2",
        }

    async def test_n1_cannot_register_as_n2(self, cluster: Cluster) -> None:
        async with await self.daemon_stub(cluster, "n1") as channel:
            call = manager_pb2_grpc.ManagerServiceStub(channel).RegisterAgents(
                mpb.RegisterAgentsRequest(
                    daemon_address="127.0.0.1:1",
                    daemon_id="n2",
                    agents=[pb.AgentInfo(agent_id="new0")],
                ),
                timeout=5,
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
        assert err.value.code() == DENIED
        assert "'n1' may not register as daemon 'n2'" in (err.value.details() or "")

    async def test_n1_cannot_take_over_an_agent_of_n2(self, cluster: Cluster) -> None:
        async with await self.daemon_stub(cluster, "n1") as channel:
            call = manager_pb2_grpc.ManagerServiceStub(channel).RegisterAgents(
                mpb.RegisterAgentsRequest(
                    daemon_address="127.0.0.1:1", agents=[pb.AgentInfo(agent_id="w2")]
                ),
                timeout=5,
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
        assert err.value.code() == DENIED
        assert "agent 'w2' belongs to daemon 'n2'" in (err.value.details() or "")
        assert (await agents_by_id(cluster.manager.stub))["w2"].daemon_address == (
            cluster.daemons["n2"].server.address
        )

    async def test_a_user_token_cannot_register_a_daemon(self, cluster: Cluster) -> None:
        async with cluster.channel(admin_token()) as channel:
            call = manager_pb2_grpc.ManagerServiceStub(channel).RegisterAgents(
                mpb.RegisterAgentsRequest(
                    daemon_address="127.0.0.1:1", agents=[pb.AgentInfo(agent_id="evil")]
                ),
                timeout=5,
            )
            assert await code_of_call(call) == DENIED

    async def test_an_admin_removes_a_lost_agent_only(self, cluster: Cluster) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await cluster.manager.stub.RemoveAgent(mpb.RemoveAgentRequest(agent_id="w2"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


class TestOneCertificateForEveryNode:
    """A DaemonSet's pods share one daemon certificate, made before any pod had an address."""

    async def test_the_manager_reaches_each_node_by_the_certificates_name(
        self, pki: Pki, tmp_path: Path
    ) -> None:
        cert, key = issue(pki.directory, "daemon", "nodes", sans=())  # names no address
        trust = f'tls = {{ ca = "{pki.ca}", cert = "{cert}", key = "{key}" }}'
        config = manager_config(
            tmp_path, tls=pki.files("manager", "m1").table(), daemon_listen="127.0.0.1:0"
        )
        async with running_manager(config, credentials=pki.server_only_credentials()) as manager:
            daemon_port = manager.server.daemon_address
            async with (
                running_daemon(
                    linked_daemon_config(
                        tmp_path,
                        "node-a",
                        daemon_port,
                        agents_toml(("w-{node}", "g1", 48200, "")),
                        trust=trust,
                    )
                ),
                running_daemon(
                    linked_daemon_config(
                        tmp_path,
                        "node-b",
                        daemon_port,
                        agents_toml(("w-{node}", "g1", 48210, "")),
                        trust=trust,
                    )
                ),
            ):

                async def registered() -> bool:
                    return len(await agents_by_id(manager.stub)) == 2

                await eventually(registered)
                registry = manager.server.manager.registry

                def agents() -> dict[str, tuple[str, str, str]]:
                    return {r.agent_id: (r.daemon_id, r.node, r.status) for r in registry.list()}

                assert agents() == {
                    "w-node-a": ("nodes", "node-a", "alive"),
                    "w-node-b": ("nodes", "node-b", "alive"),
                }
                for agent_id in agents():  # dialed at 127.0.0.1, which the certificate lacks
                    created = await manager.stub.CreateKernel(
                        mpb.CreateKernelRequest(spec=sleeper(), agent_id=agent_id)
                    )
                    assert created.kernel.kernel.agent_id == agent_id
                # Neither node's registration or heartbeats ended the other's session.
                await asyncio.sleep(5 * HEARTBEAT)
                assert {status for _, _, status in agents().values()} == {"alive"}
                assert len(agents()) == 2


class TestTokens:
    async def test_a_scoped_token_creates_in_its_group_only_and_reaches_its_own_kernels(
        self, cluster: Cluster
    ) -> None:
        alice = await cluster.token("alice", scaling_groups=["g1"])
        bob = await cluster.token("bob", scaling_groups=["g1", "g2"])
        async with cluster.channel(alice) as a, cluster.channel(bob) as b:
            as_alice = manager_pb2_grpc.ManagerServiceStub(a)
            as_bob = manager_pb2_grpc.ManagerServiceStub(b)
            mine = (
                await as_alice.CreateKernel(
                    mpb.CreateKernelRequest(spec=sleeper(), scaling_group="g1")
                )
            ).kernel
            assert mine.owner == "token:alice"
            other = (
                await as_bob.CreateKernel(
                    mpb.CreateKernelRequest(spec=sleeper(), scaling_group="g1")
                )
            ).kernel
            kid = other.kernel.kernel_id

            refused = as_alice.CreateKernel(
                mpb.CreateKernelRequest(spec=sleeper(), scaling_group="g2")
            )
            assert await code_of_call(refused) == DENIED
            pinned = as_alice.CreateKernel(mpb.CreateKernelRequest(spec=sleeper(), agent_id="x1"))
            assert await code_of_call(pinned) == DENIED
            for call in (
                as_alice.GetKernel(pb.GetKernelRequest(kernel_id=kid)),
                as_alice.DestroyKernel(pb.DestroyKernelRequest(kernel_id=kid)),
                as_alice.GetKernelLogs(pb.GetKernelLogsRequest(kernel_id=kid)),
            ):
                assert await code_of_call(call) == DENIED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in as_alice.Execute(pb.ExecuteRequest(kernel_id=kid, argv=["true"])):
                    pass
            assert err.value.code() == DENIED
            listed = await as_alice.ListKernels(mpb.ManagerListKernelsRequest())
            assert [k.kernel.kernel_id for k in listed.kernels] == [mine.kernel.kernel_id]

            # An admin reaches both.
            every = await cluster.manager.stub.ListKernels(mpb.ManagerListKernelsRequest())
            assert {k.kernel.kernel_id for k in every.kernels} == {mine.kernel.kernel_id, kid}
            await cluster.manager.stub.DestroyKernel(pb.DestroyKernelRequest(kernel_id=kid))
            await as_alice.DestroyKernel(pb.DestroyKernelRequest(kernel_id=mine.kernel.kernel_id))

    async def test_a_revoked_token_stops_at_once(self, cluster: Cluster) -> None:
        carol = await cluster.token("carol", scaling_groups=["g1"])
        async with cluster.channel(carol) as channel:
            stub = manager_pb2_grpc.ManagerServiceStub(channel)
            await stub.ListAgents(mpb.ManagerListAgentsRequest())
            await cluster.manager.stub.RevokeToken(mpb.RevokeTokenRequest(token="carol"))
            assert await code_of_call(stub.ListAgents(mpb.ManagerListAgentsRequest())) == (
                UNAUTHENTICATED
            )

    async def test_an_expired_token_stops_working(self, cluster: Cluster) -> None:
        brief = await cluster.token("brief", scaling_groups=["g1"], expires_in=0.5)
        async with cluster.channel(brief) as channel:
            stub = manager_pb2_grpc.ManagerServiceStub(channel)

            async def refused() -> bool:
                call = stub.ListAgents(mpb.ManagerListAgentsRequest())
                return await code_of_call(call) == UNAUTHENTICATED

            await eventually(refused)

    async def test_token_management_needs_an_admin(self, cluster: Cluster) -> None:
        dave = await cluster.token("dave", scaling_groups=["g1"])
        async with cluster.channel(dave) as channel:
            stub = manager_pb2_grpc.ManagerServiceStub(channel)
            for call in (
                stub.CreateToken(mpb.CreateTokenRequest(name="x", admin=True)),
                stub.ListTokens(mpb.ListTokensRequest()),
                stub.RevokeToken(mpb.RevokeTokenRequest(token="admin")),
                stub.RemoveAgent(mpb.RemoveAgentRequest(agent_id="w1")),
            ):
                assert await code_of_call(call) == DENIED

    async def test_the_manager_keeps_only_a_hash(self, cluster: Cluster) -> None:
        token = await cluster.token("erin", scaling_groups=["g1"])
        secret = token.split("_", 2)[2]
        stored = b"".join(p.read_bytes() for p in cluster.tmp_path.glob("manager.db*"))
        assert secret.encode() not in stored
        listed = await cluster.manager.stub.ListTokens(mpb.ListTokensRequest())
        assert "erin" in {t.name for t in listed.tokens}
        assert secret not in str(listed)


class TestSecrets:
    async def test_env_values_only_for_owner_and_admins(self, cluster: Cluster) -> None:
        frank = await cluster.token("frank", scaling_groups=["g1"])
        watcher = await cluster.token("watcher", viewer=True, scaling_groups=["g1"])
        spec = sleeper(env={"PASSWORD": "hunter2"})
        async with cluster.channel(frank) as f, cluster.channel(watcher) as w:
            as_frank = manager_pb2_grpc.ManagerServiceStub(f)
            as_viewer = manager_pb2_grpc.ManagerServiceStub(w)
            created = (
                await as_frank.CreateKernel(mpb.CreateKernelRequest(spec=spec, scaling_group="g1"))
            ).kernel
            kid = created.kernel.kernel_id
            assert created.kernel.spec.env["PASSWORD"] == "hunter2"
            seen = (await as_viewer.GetKernel(pb.GetKernelRequest(kernel_id=kid))).kernel
            assert dict(seen.kernel.spec.env) == {"PASSWORD": "<redacted>"}
            listed = (await as_viewer.ListKernels(mpb.ManagerListKernelsRequest())).kernels
            assert [dict(k.kernel.spec.env) for k in listed] == [{"PASSWORD": "<redacted>"}]
            as_admin = await cluster.manager.stub.GetKernel(pb.GetKernelRequest(kernel_id=kid))
            assert as_admin.kernel.kernel.spec.env["PASSWORD"] == "hunter2"
            # The viewer may look, not touch.
            assert (
                await code_of_call(as_viewer.DestroyKernel(pb.DestroyKernelRequest(kernel_id=kid)))
                == DENIED
            )
            assert (
                await code_of_call(
                    as_viewer.CreateKernel(
                        mpb.CreateKernelRequest(spec=sleeper(), scaling_group="g1")
                    )
                )
                == DENIED
            )

            # In a thread: the manager answering it runs on this test's loop.
            cli = await asyncio.to_thread(
                subprocess.run,
                [AGENTHOST, "kernel", "get", kid, "--json", "--manager", cluster.users],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "AGENTHOST_TOKEN": watcher, "AGENTHOST_CA": str(cluster.pki.ca)},
            )
            assert cli.returncode == 0, cli.stderr
            assert json.loads(cli.stdout)["kernel"]["spec"]["env"] == {"PASSWORD": "<redacted>"}
            await as_frank.DestroyKernel(pb.DestroyKernelRequest(kernel_id=kid))

    async def test_state_is_private_and_secrets_stay_out_of_logs(
        self, cluster: Cluster, caplog: pytest.LogCaptureFixture
    ) -> None:
        bind_caller_to_log_records()
        caplog.set_level(logging.DEBUG)
        gina = await cluster.token("gina", scaling_groups=["g1"])
        async with cluster.channel(gina) as channel:
            stub = manager_pb2_grpc.ManagerServiceStub(channel)
            spec = sleeper(env={"API_KEY": "s3cr3t-value"})
            created = (
                await stub.CreateKernel(mpb.CreateKernelRequest(spec=spec, scaling_group="g1"))
            ).kernel
            await stub.DestroyKernel(pb.DestroyKernelRequest(kernel_id=created.kernel.kernel_id))
        text = caplog.text
        assert "s3cr3t-value" not in text and gina not in text
        # The caller is on its call's log lines (the daemon's too: there the caller is
        # the manager's certificate).
        callers = {r.getMessage(): getattr(r, "caller", None) for r in caplog.records}
        created_line = f"kernel {created.kernel.kernel_id} created on agent w1"
        assert callers[created_line] == " [token:gina]"
        assert " [manager/m1]" in callers.values()
        assert stat.S_IMODE((cluster.tmp_path / "manager.db").stat().st_mode) == 0o600
        for name in ("n1", "n2"):
            state = cluster.tmp_path / name / "state"
            assert stat.S_IMODE(state.stat().st_mode) == 0o700
            for checkpoint in state.glob("agents/*/state.json"):
                assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o600
