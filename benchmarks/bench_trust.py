"""Trust benchmarks: what TLS and authorization cost, measured side by side in one run.

Two clusters run as real processes (`agenthost manager` + `agenthost daemon`, one
local agent with one sleeping kernel each): one plaintext on loopback (`insecure =
true`), one secure (`[manager.tls]`, `[daemon.tls]`, certificates from one CA
made for the run). The client is this process; every manager call carries the
admin bearer token (a plaintext manager checks tokens too, so the plaintext
baseline pays for the token lookup; the difference measured is TLS, mutual TLS
to the daemon and the certificate checks).

1. Routed GetKernel through the manager: secure (TLS + token, then mutual TLS to
   the daemon) against plaintext. Target: latency at most 1.15x.
2. Direct GetKernel on the daemon: mutual TLS (an admin user certificate, checked
   by the daemon's policy on every call) against plaintext.
3. The manager hop over TLS: routed GetKernel through the secure manager against
   the same GetKernel made directly to the secure daemon. Target: at most 2.2x.

Repetitions interleave the two sides of each comparison; figures are medians,
ratios the medians of per-repetition ratios.

    .venv/bin/python benchmarks/bench_trust.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc

from benchmarks.measure import Comparison, compare
from common.home import token_file
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc, manager_pb2_grpc
from protos import manager_pb2 as mpb
from tests.managers import ManagerProcess, agents_toml, free_port, linked_daemon_config
from tests.managers import manager_config as write_manager_config
from tests.pki import Pki, TlsPaths
from tests.servers import DaemonProcess

TIMEOUT = 10.0


@dataclass(frozen=True)
class Settings:
    reps: int
    calls: int
    seconds: float
    concurrency: int

    @classmethod
    def of(cls, quick: bool) -> Settings:
        if quick:
            return cls(reps=4, calls=150, seconds=0.5, concurrency=16)
        return cls(reps=12, calls=400, seconds=1.5, concurrency=16)


@dataclass
class Cluster:
    """One manager and one daemon with a kernel, and how a client reaches them."""

    manager: ManagerProcess
    daemon: DaemonProcess
    manager_credentials: grpc.ChannelCredentials | None
    daemon_credentials: grpc.ChannelCredentials | None

    def manager_channel(self) -> grpc.aio.Channel:
        return _channel(self.manager.address, self.manager_credentials)

    def daemon_channel(self) -> grpc.aio.Channel:
        return _channel(self.daemon.address, self.daemon_credentials)


def _channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, credentials)


@contextmanager
def cluster(work: Path, pki: Pki | None, port: int) -> Iterator[Cluster]:
    """Start a manager and a daemon (TLS when pki is given) and stop them after."""
    work.mkdir(parents=True)
    with ExitStack() as stack:
        if pki is None:
            config = write_manager_config(work, missed_heartbeats=20)
            manager = ManagerProcess(config)
            stack.callback(manager.close)
            daemon_target, trust = manager.address, "insecure = true"
        else:
            daemon_port = f"127.0.0.1:{free_port()}"
            config = write_manager_config(
                work,
                missed_heartbeats=20,
                tls=pki.files("manager", "m1").table(),
                daemon_listen=daemon_port,
            )
            manager = ManagerProcess(config)
            stack.callback(manager.close)
            daemon_target, trust = daemon_port, f"tls = {pki.files('daemon', 'n1').toml()}"
        daemon_config = linked_daemon_config(
            work,
            "d",
            daemon_target,
            agents_toml(("t0", "default", port, "")),
            heartbeat=2.0,
            trust=trust,
            reconcile_interval=5.0,
        )
        daemon = DaemonProcess(daemon_config, "--destroy-kernels-on-exit")
        stack.callback(daemon.close)
        stack.callback(daemon.terminate)
        admin: TlsPaths | None = pki.files("user", "root", admin=True) if pki else None
        yield Cluster(
            manager,
            daemon,
            pki.server_only_credentials() if pki else None,
            admin.channel_credentials() if admin else None,
        )


async def calls(
    c: Cluster, token: str
) -> tuple[object, object, grpc.aio.Channel, grpc.aio.Channel]:
    """The routed and the direct GetKernel of the cluster's kernel, ready to call."""
    metadata = (("authorization", f"Bearer {token}"),)
    m_channel, d_channel = c.manager_channel(), c.daemon_channel()
    m_stub = manager_pb2_grpc.ManagerServiceStub(m_channel)
    d_stub = agent_pb2_grpc.AgentServiceStub(d_channel)
    for _ in range(400):
        listed = await m_stub.ListAgents(
            mpb.ManagerListAgentsRequest(), timeout=TIMEOUT, metadata=metadata
        )
        if listed.agents:
            break
        await asyncio.sleep(0.05)
    await m_stub.CreateKernel(
        mpb.CreateKernelRequest(spec=pb.KernelSpec(kernel_id="k-bench", command=["sleep", "3600"])),
        timeout=TIMEOUT,
        metadata=metadata,
    )
    routed_request = pb.GetKernelRequest(kernel_id="k-bench")
    direct_request = pb.GetKernelRequest(agent_id="t0", kernel_id="k-bench")

    async def routed() -> object:
        return await m_stub.GetKernel(routed_request, timeout=TIMEOUT, metadata=metadata)

    async def direct() -> object:
        return await d_stub.GetKernel(direct_request, timeout=TIMEOUT)

    return routed, direct, m_channel, d_channel


def report(title: str, base: str, candidate: str, r: Comparison, target: float | None) -> None:
    print(title)
    print(
        f"   latency     {base} {r.latency_us[base]:8.0f} us   "
        f"{candidate} {r.latency_us[candidate]:8.0f} us"
    )
    print(f"   throughput  {base} {r.rps[base]:8.0f} /s   {candidate} {r.rps[candidate]:8.0f} /s")
    verdict = ""
    if target is not None:
        verdict = f"   (target <= {target}x: {'ok' if r.latency_ratio <= target else 'MISSED'})"
    print(
        f"   ratio {candidate}/{base}: latency {r.latency_ratio:.3f}x, "
        f"throughput {r.throughput_ratio:.3f}x{verdict}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier figures)")
    s = Settings.of(parser.parse_args().quick)
    with tempfile.TemporaryDirectory(prefix="bench-trust-") as tmp:
        work = Path(tmp)
        os.environ["AGENTHOST_HOME"] = str(work / "home")  # the managers' admin token
        pki = Pki(work / "pki")
        with (
            cluster(work / "plain", None, 48300) as plain,
            cluster(work / "tls", pki, 48310) as tls,
        ):
            token = token_file().read_text().strip()
            p_routed, p_direct, *p_channels = await calls(plain, token)
            t_routed, t_direct, *t_channels = await calls(tls, token)
            try:
                one = await compare(
                    ("plaintext", p_routed),
                    ("tls", t_routed),
                    s.reps,
                    s.calls,
                    s.seconds,
                    s.concurrency,
                )
                two = await compare(
                    ("plaintext", p_direct),
                    ("mtls", t_direct),
                    s.reps,
                    s.calls,
                    s.seconds,
                    s.concurrency,
                )
                three = await compare(
                    ("direct", t_direct),
                    ("routed", t_routed),
                    s.reps,
                    s.calls,
                    s.seconds,
                    s.concurrency,
                )
            finally:
                for channel in (*p_channels, *t_channels):
                    await channel.close()
        report(
            "1. routed GetKernel: TLS + token vs plaintext (+ token)", "plaintext", "tls", one, 1.15
        )
        report(
            "2. direct GetKernel on the daemon: mutual TLS vs plaintext",
            "plaintext",
            "mtls",
            two,
            None,
        )
        report("3. the manager hop over TLS: routed vs direct", "direct", "routed", three, 2.2)


if __name__ == "__main__":
    asyncio.run(main())
