"""The backend import table: each backend built from its own settings, clients imported lazily."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import FailedPrecondition
from common.ids import AgentId
from daemon.backends import BACKEND_CLASSES, create_backend
from daemon.backends.docker.settings import DockerSettings
from daemon.backends.local.settings import LocalSettings
from daemon.config import parse_config
from daemon.resources import HostCapacity
from tests.servers import daemon_config, local_agents

ROOT = Path(__file__).resolve().parents[4]
HEAVY = ("aiodocker", "aiohttp", "kubernetes")
HOST = HostCapacity(cores=(0, 1), memory=8 << 30, devices={})

# Starts the daemon of a config (as `agenthost daemon` does, from the command's
# module on), creates and destroys a kernel on every agent, and stops it.
LOCAL_DAEMON = """
import asyncio, sys
import cli.main
from daemon.config import load_config
from daemon.kernels import KernelSpec
from daemon.server import DaemonServer

async def run():
    server = await DaemonServer.start(load_config(sys.argv[1]))
    for agent in server.runtime.agents.values():
        [kernel] = await agent.create_kernels([KernelSpec(kernel_id="", command=("sleep", "30"))])
        await agent.destroy_kernel(kernel.kernel_id)
    await server.stop(destroy_kernels=True, grace=0.1)

asyncio.run(run())
print(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(","))))
"""

IMPORTED_AFTER = """
import importlib, sys
for name in sys.argv[1].split(","):
    importlib.import_module(name)
print(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(","))))
"""


def heavy_imported_by(*modules: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTED_AFTER, ",".join(modules), ",".join(HEAVY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


class TestImports:
    def test_config_runtime_and_every_settings_module_import_no_backend_client(self) -> None:
        assert (
            heavy_imported_by(
                "daemon.runtime",
                "daemon.config",
                "daemon.backends.local.settings",
                "daemon.backends.docker.settings",
                "daemon.backends.kubernetes.settings",
            )
            == "[]"
        )

    def test_the_docker_backend_module_is_where_aiodocker_comes_in(self) -> None:
        assert "aiodocker" in heavy_imported_by("daemon.backends.docker.backend")

    def test_the_kubernetes_backend_module_is_where_the_client_comes_in(self) -> None:
        assert "kubernetes" in heavy_imported_by("daemon.backends.kubernetes.backend")

    def test_the_agenthost_command_imports_no_backend_client(self) -> None:
        assert heavy_imported_by("cli.main") == "[]"

    def test_a_running_local_only_daemon_imports_no_backend_client(self, tmp_path: Path) -> None:
        config = daemon_config(tmp_path, local_agents(2))
        result = subprocess.run(
            [sys.executable, "-c", LOCAL_DAEMON, str(config), ",".join(HEAVY)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert result.stdout.strip().splitlines()[-1] == "[]"


class TestSettings:
    @pytest.mark.parametrize("backend", sorted(BACKEND_CLASSES))
    def test_an_agent_hands_its_backend_the_model_that_backend_declares(self, backend: str) -> None:
        raw = {
            "agents": [{"id": "a0", "backend": backend, "port_range": [30000, 30009]}],
            "daemon": {"allocation_mode": "shared", "insecure": True},
        }
        [agent] = parse_config(raw, Path("d.toml"), HOST).agents
        module_name, class_name = BACKEND_CLASSES[backend].split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        assert type(agent.backend_settings) is cls.settings_model

    async def test_a_backend_given_another_backends_settings_is_refused(self) -> None:
        with pytest.raises(TypeError) as err:
            await create_backend("local", AgentId("a0"), DockerSettings(), "id")
        assert (
            str(err.value) == "agent 'a0': backend 'local' takes LocalSettings, not DockerSettings"
        )

    async def test_a_backend_this_build_lacks_is_a_failed_precondition(self) -> None:
        with pytest.raises(FailedPrecondition) as err:
            await create_backend("podman", AgentId("a0"), LocalSettings(), "id")
        assert str(err.value) == (
            "agent 'a0': backend 'podman' is not available in this build; "
            "available: local, docker, kubernetes"
        )
