"""A writer that dies half-way through a custody append, as a process killed by a power cut would.

usage: die_mid_append.py STORE_ROOT EVIDENCE_ID      dies appending an event to that item
       die_mid_append.py STORE_ROOT --ingest FILE    dies appending the "ingested" event of FILE
The custody line is written through os.write; this process writes half of
it, then kills itself with SIGKILL: no clean-up code of any kind runs.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from worker.backends.local import LocalStore  # noqa: E402

_real_write = os.write


def _half_then_die(fd: int, data) -> int:
    _real_write(fd, bytes(data)[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


if __name__ == "__main__":
    store = LocalStore(Path(sys.argv[1]))
    os.write = _half_then_die
    if sys.argv[2] == "--ingest":
        with open(sys.argv[3], "rb") as handle:
            store.put_original(handle, intake={"original_name": "killed.mp4", "case": "C-9"}, actor="dying-writer")
    else:
        store.append_custody(sys.argv[2], "reprocess requested", "dying-writer", {"pipeline": "intake"})
    raise SystemExit("the append finished; the test is void")
