"""Progress bars for long work, shown only when a person is watching a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


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


@contextmanager
def counted(desc: str, unit: str) -> Iterator[Callable[[int, int], None] | None]:
    """For work that counts itself (a step's frames or chunks): a ``(done, total)`` callback that drives a
    bar, or None when no one watches a terminal (the step then skips its reports)."""
    if not sys.stderr.isatty():
        yield None
        return
    with progress_bar(None, desc, unit=unit) as bar:
        def report(done: int, total: int) -> None:   # a step reports seldom (every 25 frames): draw each one
            bar.total = total
            bar.n = done
            bar.refresh()

        yield report
