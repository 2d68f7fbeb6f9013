"""Timestamps as they appear in every record: ISO 8601, UTC, microseconds, 'Z'."""

from datetime import datetime, timezone


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
