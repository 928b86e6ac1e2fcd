"""Scraping a server's metrics endpoint over real HTTP, as Prometheus does.

`scrape(address)` GETs `http://<address>/metrics` (in a thread: the server runs on
the test's own event loop) and parses the text with prometheus_client's own
parser into `Samples`, which tests query by series name and labels.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Samples:
    """Every sample of one scrape: (series name, labels) -> value; and the families."""

    values: Mapping[tuple[str, frozenset[tuple[str, str]]], float]
    families: frozenset[str]  # metric family names, as a dashboard queries them

    def get(self, name: str, **labels: str) -> float | None:
        """The value of the series with exactly these labels, if present."""
        return self.values.get((name, frozenset(labels.items())))

    def value(self, name: str, **labels: str) -> float:
        """The value of the series with exactly these labels (it must be present)."""
        found = self.get(name, **labels)
        assert found is not None, f"no series {name}{labels}; have: {self.matching(name)}"
        return found

    def matching(self, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
        """Every series of name whose labels include these, by its labels."""
        wanted = set(labels.items())
        return {
            series_labels: value
            for (series_name, series_labels), value in self.values.items()
            if series_name == name and wanted <= series_labels
        }


def fetch(address: str, path: str = "/metrics", method: str = "GET") -> tuple[int, str, str]:
    """One HTTP request: status, content type and body (blocking)."""
    request = urllib.request.Request(f"http://{address}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def parse(text: str) -> Samples:
    """Samples of an exposition-format text."""
    values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Samples(values, frozenset(names))


async def scrape(address: str) -> Samples:
    """GET /metrics of the endpoint at address and parse it."""
    status, _, body = await asyncio.to_thread(fetch, address)
    assert status == 200, body
    return parse(body)
