"""The ``evidence`` command plus a pipeline whose step waits for the test.

Lets tests stop or kill a real worker process in the middle of a step:
the step touches ``wait.started``, then waits for ``wait.release`` to exist.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipelines import registry  # noqa: E402
from pipelines.pipeline import Param, Pipeline, Step, StepContext, StepResult  # noqa: E402


def wait(ctx: StepContext) -> StepResult:
    (ctx.workdir / "partial.txt").write_text("half-done output of an interrupted step\n")
    Path(ctx.params["started"]).touch()
    deadline = time.monotonic() + ctx.params["timeout_s"]
    while not Path(ctx.params["release"]).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released the step")
        time.sleep(0.05)
    out = ctx.workdir / "slow.txt"
    out.write_text(f"done for {ctx.evidence_id}\n")
    return StepResult(files={"slow.txt": out}, facts={"waited": True})


SLOW = Pipeline("slow", "1", (Step("wait", wait),),
                params={"wait.started": Param(""), "wait.release": Param(""), "wait.timeout_s": Param(60.0)})
registry.register(SLOW)

if __name__ == "__main__":
    from worker.cli import main

    raise SystemExit(main(sys.argv[1:]))
