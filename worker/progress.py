"""Progress bars for long work, shown only when a person is watching a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator, Protocol


class Progress(Protocol):
    def update(self, n: int = 1) -> None: ...


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


SILENT: Progress = _Silent()


@contextmanager
def progress_bar(total: int | None, desc: str, unit: str = "B", enabled: bool | None = None) -> Iterator[Progress]:
    """A tqdm bar on stderr when it is a terminal; a no-op otherwise (logs and --json stay clean)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield SILENT
        return
    from tqdm import tqdm

    scale = unit == "B"
    with tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, unit_divisor=1024 if scale else 1000,
              file=sys.stderr, leave=False, dynamic_ncols=True) as bar:
        yield bar
