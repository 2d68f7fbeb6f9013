"""Logs on stderr: one JSON object per line for machines, one readable line for a person at a terminal.

Fields passed as ``extra={...}`` become keys of the object (``key=value``
after the message in the human form). Nothing restricted (GPS, device,
creation time) is ever passed to a logger. Python warnings of the libraries
(pydantic, numpy, onnx) go through the same logger, and the native logs of
OpenCV and onnxruntime, which write to stderr on their own, are limited to
errors where they are set up (pipelines/__init__.py, each onnxruntime
session), so that a JSON log stays one object per line.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class HumanFormatter(logging.Formatter):
    """``12:04:31 warning evidence.worker: job failed  job_id=… reason=…``, local time."""

    def format(self, record: logging.LogRecord) -> str:
        fields = "  ".join(f"{key}={value}" for key, value in vars(record).items() if key not in _STANDARD)
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname.lower()} " \
               f"{record.name}: {record.getMessage()}" + (f"  {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


FORMATS = ("human", "json")


def configure(level: str = "INFO", form: str | None = None) -> None:
    """Log at ``level`` in ``form`` (``human``, ``json``; None: human on a terminal, JSON otherwise)."""
    form = form or ("human" if sys.stderr.isatty() else "json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(HumanFormatter() if form == "human" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
