"""deploy/grafana/agenthost.json: a valid dashboard whose every query names real series.

The series names and labels it may use are taken from what a real daemon and a
real manager (in this process, metrics on) serve at /metrics, so a renamed metric
or a misspelt label in the dashboard fails here rather than on a blank panel.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from protos import agent_pb2 as pb
from tests.managers import (
    agents_by_id,
    agents_toml,
    create,
    linked_daemon_config,
    manager_config,
    running_manager,
)
from tests.scrape import fetch
from tests.servers import eventually, running_daemon, sleeper

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "agenthost.json"
SERIES = re.compile(r"\bagenthost_[a-z_]+")
BY = re.compile(r"\bby \(([^)]*)\)")
SELECTOR = re.compile(r"\{([^}]*)\}")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
}


def load() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in doc["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(doc: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template variables."""
    exprs = [t["expr"] for p in panels(doc) for t in p.get("targets", [])]
    for variable in doc["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def exported(texts: list[str]) -> dict[str, set[str]]:
    """Every series name the texts define (families and their sample suffixes by type),
    with the label names seen on it."""
    names: dict[str, set[str]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for name in (family.name, *(family.name + s for s in SUFFIXES.get(family.type, ()))):
                names.setdefault(name, set())
            for sample in family.samples:
                names.setdefault(sample.name, set()).update(sample.labels)
                names[family.name].update(sample.labels)
    return names


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """What a manager and a daemon of two agents export after a create, a failed create
    and a routed call."""

    async def run() -> dict[str, set[str]]:
        tmp_path = tmp_path_factory.mktemp("grafana")
        config = manager_config(tmp_path, metrics_listen="127.0.0.1:0")
        async with running_manager(config) as manager:
            agents = agents_toml(
                ("g0", "default", 47700, 'resources = { memory = "1GiB" }'),
                ("g1", "default", 47710, 'resources = { memory = "1GiB" }'),
            )
            path = linked_daemon_config(tmp_path, "d", manager.address, agents)
            text = path.read_text().replace(
                "[daemon]\n", '[daemon]\nmetrics_listen = "127.0.0.1:0"\n', 1
            )
            path.write_text(text)
            async with running_daemon(path) as daemon:

                async def registered() -> bool:
                    return len(await agents_by_id(manager.stub)) == 2

                await eventually(registered)
                await create(manager.stub, sleeper("k1"))
                await manager.stub.GetKernel(pb.GetKernelRequest(kernel_id="k1"))
                bad = pb.KernelSpec(kernel_id="bad", command=["/nonexistent/agenthost-test"])
                with pytest.raises(grpc.aio.AioRpcError):
                    await create(manager.stub, bad, agent_id="g1")
                assert daemon.server.metrics is not None and manager.server.metrics is not None
                texts = []
                for endpoint in (daemon.server.metrics, manager.server.metrics):
                    status, _, body = await asyncio.to_thread(fetch, endpoint.address)
                    assert status == 200
                    texts.append(body)
        return exported(texts)

    return asyncio.run(run())


class TestDashboard:
    def test_it_is_a_dashboard_with_unique_panel_ids_on_the_grid(self) -> None:
        doc = load()
        assert doc["uid"] == "agenthost" and doc["title"] and doc["schemaVersion"] >= 36
        ids = [p["id"] for p in panels(doc)]
        assert len(ids) == len(set(ids))
        for panel in panels(doc):
            grid = panel["gridPos"]
            assert grid["w"] >= 1 and grid["x"] + grid["w"] <= 24 and grid["h"] >= 1
            assert panel["type"] in ("row", "stat", "timeseries")
            for target in panel.get("targets", []):
                assert target["refId"] and target["expr"].count("(") == target["expr"].count(")")
        variables = {v["name"] for v in doc["templating"]["list"]}
        assert variables == {"datasource", "agent_id"}

    def test_every_series_it_queries_is_exported(self, series: dict[str, set[str]]) -> None:
        used = {name for expr in queries(load()) for name in SERIES.findall(expr)}
        assert used, "the dashboard queries nothing"
        assert sorted(used - series.keys()) == []

    def test_every_label_it_groups_or_selects_by_is_on_the_series(
        self, series: dict[str, set[str]]
    ) -> None:
        for expr in queries(load()):
            # Families with no sample here (devices on a host without any) show no labels.
            seen = [series[n] for n in SERIES.findall(expr) if series[n]]
            if not seen:
                continue
            labels_there = set().union(*seen) | {"le"}
            grouped = {label.strip() for group in BY.findall(expr) for label in group.split(",")}
            selected = {
                m.split("=")[0].rstrip("!~").strip()
                for sel in SELECTOR.findall(expr)
                for m in sel.split(",")
                if m.strip()
            }
            assert grouped | selected <= labels_there, expr

    def test_it_shows_every_family_the_servers_export(self, series: dict[str, set[str]]) -> None:
        """No series is left off the dashboard (the RPC histograms' _sum, and _created
        timestamps, excepted)."""
        used = {name for expr in queries(load()) for name in SERIES.findall(expr)}
        families = {
            n
            for n in series
            if n.startswith("agenthost_")
            and not n.endswith(("_sum", "_created", "_count", "_bucket", "_total"))
        }
        shown = {f for f in families if f in used or any(u.startswith(f + "_") for u in used)}
        assert sorted(families - shown) == []
