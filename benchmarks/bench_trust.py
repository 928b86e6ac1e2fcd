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
4. The floor of any hop: the same GetKernel through a bare grpc.aio relay (this
   script with `--relay`, a process of its own: TLS to the client, mutual TLS with
   the manager's certificate to the daemon, the request's and the answer's bytes
   passed through, no authorization, no logic) against the direct call. What the
   manager adds to a hop is part 3 less part 4.

Repetitions interleave the two sides of each comparison; figures are medians,
ratios the medians of per-repetition ratios. Parts 3 and 4 also time single calls
made alternately (routed, direct, direct, routed, ...; `paired` in measure.py), so
drift of the machine hits both sides alike.

    .venv/bin/python benchmarks/bench_trust.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
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

from benchmarks.measure import Call, Comparison, Paired, compare, paired
from common.credentials import daemon_host
from common.home import token_file
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc, manager_pb2_grpc
from protos import manager_pb2 as mpb
from tests.managers import (
    ManagerProcess,
    agents_toml,
    free_port,
    linked_daemon_config,
    wait_for_agents,
)
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
    pairs: int  # single calls of each side, alternately (parts 3 and 4)

    @classmethod
    def of(cls, quick: bool) -> Settings:
        if quick:
            return cls(reps=4, calls=150, seconds=0.5, concurrency=16, pairs=500)
        return cls(reps=12, calls=400, seconds=1.5, concurrency=16, pairs=3000)


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


async def calls(c: Cluster, token: str) -> tuple[Call, Call, grpc.aio.Channel, grpc.aio.Channel]:
    """The routed and the direct GetKernel of the cluster's kernel, ready to call."""
    metadata = (("authorization", f"Bearer {token}"),)
    m_channel, d_channel = c.manager_channel(), c.daemon_channel()
    m_stub = manager_pb2_grpc.ManagerServiceStub(m_channel)
    d_stub = agent_pb2_grpc.AgentServiceStub(d_channel)
    await wait_for_agents(m_stub, 1, metadata)
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


async def relay(ca: Path, cert: Path, key: Path, daemon: str, daemon_name: str) -> None:
    """The --relay side: serve GetKernel on a free loopback port (TLS) by passing its bytes
    to the daemon (mutual TLS, as the manager would); print the port, serve until killed."""
    ca_pem, cert_pem, key_pem = await asyncio.to_thread(
        lambda: (ca.read_bytes(), cert.read_bytes(), key.read_bytes())
    )
    credentials = grpc.ssl_channel_credentials(ca_pem, key_pem, cert_pem)
    channel = grpc.aio.secure_channel(
        daemon, credentials, options=[("grpc.ssl_target_name_override", daemon_name)]
    )
    forward = channel.unary_unary(
        "/agenthost.v1.AgentService/GetKernel", request_serializer=None, response_deserializer=None
    )

    async def get_kernel(request: bytes, context: object) -> bytes:
        return await forward(request, timeout=TIMEOUT)  # type: ignore[no-any-return]

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "agenthost.v1.Relay", {"GetKernel": grpc.unary_unary_rpc_method_handler(get_kernel)}
            ),
        )
    )
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, cert_pem)]))
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


@contextmanager
def relay_process(c: Cluster, pki: Pki) -> Iterator[grpc.aio.Channel]:
    """A --relay process in front of c's daemon, and a TLS channel to it."""
    manager = pki.files("manager", "m1")
    proc = subprocess.Popen(
        [sys.executable, __file__, "--relay", str(manager.ca), str(manager.cert), str(manager.key),
         c.daemon.address, daemon_host("n1")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield grpc.aio.secure_channel(f"127.0.0.1:{port}", pki.server_only_credentials())
    finally:
        proc.kill()
        proc.wait()


def relayed_call(channel: grpc.aio.Channel) -> Call:
    """The direct GetKernel of the cluster's kernel, through the relay."""
    call = channel.unary_unary(
        "/agenthost.v1.Relay/GetKernel",
        request_serializer=pb.GetKernelRequest.SerializeToString,
        response_deserializer=pb.GetKernelResponse.FromString,
    )
    request = pb.GetKernelRequest(agent_id="t0", kernel_id="k-bench")

    async def relayed() -> object:
        return await call(request, timeout=TIMEOUT)

    return relayed


def report_paired(
    title: str, base: str, candidate: str, r: Paired, target: float | None = None
) -> None:
    print(title)
    verdict = ""
    if target is not None:
        verdict = f"   (target <= {target}x: {'ok' if r.ratio <= target else 'MISSED'})"
    print(
        f"   single calls alternately: {base} {r.median_us[base]:8.0f} us   "
        f"{candidate} {r.median_us[candidate]:8.0f} us   ratio {r.ratio:.3f}x{verdict}"
    )


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
    parser.add_argument("--relay", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.relay:
        ca, cert, key, daemon, name = args.relay
        await relay(Path(ca), Path(cert), Path(key), daemon, name)
        return
    s = Settings.of(args.quick)
    with tempfile.TemporaryDirectory(prefix="bench-trust-") as tmp:
        work = Path(tmp)
        os.environ["AGENTHOST_HOME"] = str(work / "home")  # the managers' admin token
        pki = Pki(work / "pki")
        with (
            cluster(work / "plain", None, 48300) as plain,
            cluster(work / "tls", pki, 48310) as tls,
            relay_process(tls, pki) as relay_channel,
        ):
            token = token_file().read_text().strip()
            p_routed, p_direct, *p_channels = await calls(plain, token)
            t_routed, t_direct, *t_channels = await calls(tls, token)
            relayed = relayed_call(relay_channel)
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
                four = await compare(
                    ("direct", t_direct),
                    ("relayed", relayed),
                    s.reps,
                    s.calls,
                    s.seconds,
                    s.concurrency,
                )
                three_paired = await paired(("direct", t_direct), ("routed", t_routed), s.pairs)
                four_paired = await paired(("direct", t_direct), ("relayed", relayed), s.pairs)
            finally:
                for channel in (*p_channels, *t_channels, relay_channel):
                    await channel.close(None)
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
        report_paired("   the same", "direct", "routed", three_paired, 2.2)
        report("4. the floor: a bare grpc.aio relay vs direct", "direct", "relayed", four, None)
        report_paired("   the same", "direct", "relayed", four_paired)
        print(
            f"   the manager's own part of a hop (3 less 4): "
            f"{three.latency_ratio - four.latency_ratio:.3f}x of a direct call "
            f"({three_paired.ratio - four_paired.ratio:.3f}x from single calls)"
        )


if __name__ == "__main__":
    asyncio.run(main())
