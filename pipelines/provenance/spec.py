"""What the sign step is, apart from how it works: its version and what its result depends on. Light to
import (no C2PA library): pipelines.provenance.step has the weight.
"""

from __future__ import annotations

from typing import Any

from pipelines.pipeline import StepContext

VERSION = "1"


def fingerprint(ctx: StepContext) -> dict[str, Any]:
    # The manifest names this run: a signature is never reused from another run.
    return {"run_id": ctx.run_id}


def needs(_params: Any) -> frozenset[str]:
    return frozenset({"signing"})
