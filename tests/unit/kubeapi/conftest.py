"""Every test here talks to a stand-in API server through the official client."""

from tests.kubeapi.fixtures import core, standin

__all__ = ["core", "standin"]
