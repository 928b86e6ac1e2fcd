"""`agenthost up`: a manager and one daemon registered with it, in one process.

Secure by default and easy by default, as k3s is: on first run it makes a
cluster CA, a manager certificate and a daemon certificate under
`$AGENTHOST_HOME/pki` (default `~/.agenthost/pki`), and the manager makes an admin
token in `$AGENTHOST_HOME/token`; client commands find both there without flags.
Both servers then speak TLS (the daemon mutual TLS) whatever `insecure` the
config files say, unless a file gives its own `tls` table, which is used as is.

The only module that starts both sides; neither `daemon` nor `manager` imports
the other.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import socket
from collections.abc import Sequence
from pathlib import Path

import click

from common.addresses import host_of
from common.console import fail, log_level_option
from common.credentials import (
    CA_CERT,
    TlsFiles,
    carries_daemon_host,
    cert_paths,
    init_ca,
    issue,
    load_tls,
)
from common.errors import AgentHostError, ConfigError
from common.home import pki_dir
from common.ids import is_valid_id
from common.logsetup import setup_logging
from common.serving import settle_for_serving, stop_signals
from daemon.config import DaemonConfig, load_config
from daemon.server import DaemonServer
from manager.config import ManagerConfig, load_manager_config
from manager.server import ManagerServer

log = logging.getLogger(__name__)

# The example files `up` runs when given none: both from configs/ of the working
# directory when both are there, else both from the checkout this package runs from
# (`scripts/setup.sh` installs it in place), so `agenthost up` works from any directory.
# Their relative paths (state_dir, db_path) are relative to the files themselves.
EXAMPLES = Path(__file__).resolve().parent.parent / "configs"
DAEMON_EXAMPLE = "daemon-multi.toml"
MANAGER_EXAMPLE = "manager.toml"


def example_configs() -> tuple[Path, Path]:
    """(daemon, manager) example files: the working directory's configs/ when it has
    both, else the checkout's; ConfigError naming the options when neither has them."""
    for where in (Path("configs"), EXAMPLES):
        daemon, manager = where / DAEMON_EXAMPLE, where / MANAGER_EXAMPLE
        if daemon.is_file() and manager.is_file():
            return daemon, manager
    raise ConfigError(
        [
            f"no {DAEMON_EXAMPLE} and {MANAGER_EXAMPLE} in ./configs or in {EXAMPLES} (the "
            "example files of an agenthost checkout): give --config DAEMON.toml and "
            "--manager-config MANAGER.toml"
        ]
    )


def up_trust(
    manager_config: ManagerConfig, daemon_config: DaemonConfig, hosts: Sequence[str] = ()
) -> tuple[ManagerConfig, DaemonConfig]:
    """Both configs with TLS: their own tls tables, else certificates under $AGENTHOST_HOME/pki.

    hosts are extra names the certificates must be valid for (listen addresses).
    """
    directory = pki_dir()
    if manager_config.tls is not None and daemon_config.tls is not None:
        return manager_config, daemon_config
    if not (directory / CA_CERT).exists():
        init_ca(directory)
        log.info("up: made a cluster CA in %s", directory)
    names = ["127.0.0.1", "::1", "localhost", socket.gethostname(), *hosts]
    sans = [h for h in dict.fromkeys(names) if h not in ("0.0.0.0", "::", "")]
    if manager_config.tls is None:
        files = _certificate(directory, "manager", "manager", sans)
        manager_config = dataclasses.replace(
            manager_config, tls=load_tls(files, directory, "manager", "up: manager.tls")
        )
    if daemon_config.tls is None:
        name = _as_name(daemon_config.daemon.node)
        files = _certificate(directory, "daemon", name, sans)
        daemon_config = dataclasses.replace(
            daemon_config, tls=load_tls(files, directory, "daemon", "up: daemon.tls")
        )
    return manager_config, daemon_config


def _certificate(directory: Path, role: str, name: str, sans: Sequence[str]) -> TlsFiles:
    """The certificate of role/name in directory, issued now if missing (or made by an
    older agenthost, without the name the manager checks daemons by)."""
    cert, key = cert_paths(directory, role, name)
    outdated = role == "daemon" and cert.exists() and not carries_daemon_host(cert.read_bytes())
    if not cert.exists() or not key.exists() or outdated:
        issue(directory, role, name, sans)
        log.info("up: issued a %s certificate %s", role, cert)
    return TlsFiles(ca=directory / CA_CERT, cert=cert, key=key)


def _as_name(node: str) -> str:
    """node as a valid certificate name (hostnames with other characters are mapped)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", node).lstrip("_.-")[:63]
    return name if is_valid_id(name) else "daemon"


async def run_up(
    manager_config: ManagerConfig,
    daemon_config: DaemonConfig,
    manager_listen: str | None = None,
    daemon_listen: str | None = None,
    manager_daemon_listen: str | None = None,
) -> None:
    """A manager and one daemon registered with it, until SIGTERM or SIGINT stops both."""
    hosts = [host_of(a) for a in (manager_listen, daemon_listen) if a]
    manager_config, daemon_config = up_trust(manager_config, daemon_config, hosts)
    async with stop_signals() as stop:
        manager = await ManagerServer.start(manager_config, manager_listen, manager_daemon_listen)
        try:
            pointed = dataclasses.replace(
                daemon_config,
                daemon=daemon_config.daemon.model_copy(update={"manager": manager.daemon_address}),
            )
            daemon = await DaemonServer.start(pointed, daemon_listen)
            settle_for_serving()
            try:
                log.info(
                    "up: manager on %s (TLS; daemons on %s), daemon on %s (mutual TLS) with "
                    "agents %s; admin token in %s, CA in %s; try: AGENTHOST_MANAGER=%s "
                    "agenthost kernel create -- sleep 600",
                    manager.address,
                    manager.daemon_address,
                    daemon.address,
                    ", ".join(daemon.runtime.agents),
                    manager_config.admin_token_file,
                    pki_dir() / CA_CERT,
                    manager.address,
                )
                await stop.wait()
            finally:
                await daemon.stop()
        finally:
            await manager.stop()


@click.command("up")
@click.option(
    "--config",
    "daemon_config_path",
    envvar="AGENTHOST_UP_CONFIG",
    default=None,
    type=click.Path(path_type=Path),
    help=f"daemon TOML file  [default: configs/{DAEMON_EXAMPLE} of the working directory "
    f"when it has configs/{MANAGER_EXAMPLE} too, else the agenthost checkout's]",
)
@click.option(
    "--manager-config",
    "manager_config_path",
    default=None,
    type=click.Path(path_type=Path),
    help=f"manager TOML file  [default: configs/{MANAGER_EXAMPLE}, from where --config's "
    "default comes]",
)
@click.option("--manager-listen", default=None, help="override the manager's listen address")
@click.option(
    "--manager-daemon-listen",
    default=None,
    help="override the manager's daemon port (default: the listen port + 100)",
)
@click.option("--daemon-listen", default=None, help="override the daemon's listen address")
@log_level_option
def up_command(
    daemon_config_path: Path | None,
    manager_config_path: Path | None,
    manager_listen: str | None,
    manager_daemon_listen: str | None,
    daemon_listen: str | None,
    log_level: str,
) -> None:
    """Run a manager and one daemon registered with it, in one process.

    Secure by default: on first run it makes a CA and certificates in
    $AGENTHOST_HOME/pki (default ~/.agenthost/pki) and an admin token in
    $AGENTHOST_HOME/token, and both servers speak TLS; client commands on this host
    find the CA and the token there without flags. The daemon's `[daemon] manager`
    is set to the manager's daemon port. Ctrl-C or SIGTERM stops both; kernels
    keep running and are re-adopted next time.
    """
    setup_logging(log_level)
    try:
        if daemon_config_path is None or manager_config_path is None:
            daemon_example, manager_example = example_configs()
            daemon_config_path = daemon_config_path or daemon_example
            manager_config_path = manager_config_path or manager_example
        manager_config = load_manager_config(manager_config_path)
        daemon_config = load_config(daemon_config_path)
    except ConfigError as exc:
        fail(exc.problems, 2)
    try:
        asyncio.run(
            run_up(
                manager_config, daemon_config, manager_listen, daemon_listen, manager_daemon_listen
            )
        )
    except (AgentHostError, OSError) as exc:
        fail([str(exc)], 1)
