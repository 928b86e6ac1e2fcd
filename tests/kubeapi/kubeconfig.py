"""Client configuration pointing at a stand-in: a kubeconfig file or a `Configuration`."""

from __future__ import annotations

import json
from pathlib import Path

from kubernetes import client


def write_kubeconfig(path: Path, url: str, token: str | None, namespace: str = "default") -> Path:
    """Write a kubeconfig (JSON, which is YAML) with one context `standin`; returns `path`."""
    user: dict[str, str] = {"token": token} if token else {}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "standin", "cluster": {"server": url}}],
        "users": [{"name": "standin", "user": user}],
        "contexts": [
            {
                "name": "standin",
                "context": {"cluster": "standin", "user": "standin", "namespace": namespace},
            }
        ],
        "current-context": "standin",
    }
    path.write_text(json.dumps(config, indent=2))
    return path


def client_configuration(url: str, token: str | None) -> client.Configuration:
    """A `kubernetes.client.Configuration` for the stand-in, otherwise the client's defaults."""
    config = client.Configuration()
    config.host = url
    if token:
        config.api_key = {"authorization": token}
        config.api_key_prefix = {"authorization": "Bearer"}
    return config
