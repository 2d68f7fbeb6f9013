"""The evidence worker: store, queue, runner, custody log and CLI around the media pipelines."""

__version__ = "0.1.0"
