"""The embedded default backend: kernels are local process groups."""

from daemon.backends.local.backend import LocalBackend

__all__ = ["LocalBackend"]
