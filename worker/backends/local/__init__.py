"""The embedded default store: a local filesystem, every folder held open, nothing followed."""

from worker.backends.local.store import LocalStore

__all__ = ["LocalStore"]
