"""A stand-in Kubernetes API server for testing the kubernetes backend (not a real one).

See `tests/kubeapi/server.py` for what it serves and what it does not model.
"""

from tests.kubeapi.kubelet import Exits, Runs, RunsCommand, StaysPending
from tests.kubeapi.schemas import KUBERNETES_VERSION
from tests.kubeapi.server import Fault, RecordedRequest, StandinApiServer, gone
from tests.kubeapi.threaded import ThreadedStandin, standin_in_thread

__all__ = [
    "KUBERNETES_VERSION",
    "Exits",
    "Fault",
    "RecordedRequest",
    "Runs",
    "RunsCommand",
    "StandinApiServer",
    "StaysPending",
    "ThreadedStandin",
    "gone",
    "standin_in_thread",
]
