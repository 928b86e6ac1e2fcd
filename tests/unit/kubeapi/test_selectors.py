"""Label and field selector parsing and matching, table-driven."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.kubeapi.selectors import POD_FIELDS, parse_field_selector, parse_label_selector
from tests.kubeapi.status import ApiError


@dataclass(frozen=True)
class MatchCase:
    name: str
    selector: str
    labels: dict[str, str]
    matches: bool


MATCH_CASES = [
    MatchCase("empty matches all", "", {"a": "b"}, True),
    MatchCase("equality", "a=b", {"a": "b"}, True),
    MatchCase("equality other value", "a=b", {"a": "c"}, False),
    MatchCase("inequality absent", "a!=b", {}, True),
    MatchCase("in with spaces", "a in ( x , y )", {"a": "y"}, True),
    MatchCase("notin absent", "a notin (x)", {}, True),
    MatchCase("exists", "a", {"a": ""}, True),
    MatchCase("not exists", "!a", {"a": "1"}, False),
    MatchCase("greater than", "n>3", {"n": "4"}, True),
    MatchCase("less than non-number", "n<3", {"n": "x"}, False),
    MatchCase("prefixed key", "agenthost.io/agent-id=a0", {"agenthost.io/agent-id": "a0"}, True),
    MatchCase("and", "a=b,c in (d)", {"a": "b", "c": "e"}, False),
]


@pytest.mark.parametrize("case", MATCH_CASES, ids=[c.name for c in MATCH_CASES])
def test_label_selector_matches(case: MatchCase) -> None:
    assert parse_label_selector(case.selector).matches(case.labels) is case.matches


@pytest.mark.parametrize(
    "selector", ["a in (b", "a=b c", "Bad Key=1", "a=-bad-", "n>x"], ids=lambda s: s
)
def test_unparsable_label_selector_is_bad_request(selector: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_label_selector(selector)
    assert err.value.code == 400


def test_field_selector_on_pod_fields() -> None:
    pod = {"metadata": {"name": "p", "namespace": "n"}, "spec": {"nodeName": "node-1"}}
    assert parse_field_selector("spec.nodeName=node-1,metadata.name!=q", POD_FIELDS).matches(pod)
    assert not parse_field_selector("status.phase=Running", POD_FIELDS).matches(pod)
