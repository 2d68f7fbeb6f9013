"""An S3 store's custody stamps: one write-once object per stamped event under ``<item>/stamps/``, sealed
like the log when the store is. A part of S3Store (its base class), which gives it the objects and keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.backends.layout import STAMPS, stamp_context
from worker.record.stamps import kept, stamp_name
from worker.record.store import json_bytes


class S3Stamps:
    """The stamps half of S3Store."""

    def add_custody_stamp(self, evidence_id: str, stamp: Mapping[str, Any]) -> bool:
        name = stamp_name(int(stamp["seq"]))
        return self._put_sealed(self._item_key(evidence_id, STAMPS, name), json_bytes(stamp),
                                stamp_context(evidence_id, name))

    def custody_stamps(self, evidence_id: str) -> list[dict[str, Any]]:
        prefix = self._item_key(evidence_id, STAMPS) + "/"
        names = sorted(key[len(prefix):] for key in self._keys(prefix))
        return [kept(name, lambda n=name: self._get_sealed(prefix + n, stamp_context(evidence_id, n)))
                for name in names]
