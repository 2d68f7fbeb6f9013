"""A local store's custody stamps: one write-once file per stamped event in ``<item>/stamps/``, sealed
like the log when the store is. A part of LocalStore (its base class), which gives it the item folders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.backends.layout import STAMPS, stamp_context
from worker.record.stamps import kept, stamp_name
from worker.record.store import json_bytes


class LocalStamps:
    """The stamps half of LocalStore."""

    def add_custody_stamp(self, evidence_id: str, stamp: Mapping[str, Any]) -> bool:
        name = stamp_name(int(stamp["seq"]))
        with self._locked(evidence_id) as item, item.child(STAMPS, create=True) as folder:
            return folder.write_once(name, self.sealing.seal_bytes(json_bytes(stamp),
                                                                   stamp_context(evidence_id, name)))

    def custody_stamps(self, evidence_id: str) -> list[dict[str, Any]]:
        with self._item(evidence_id) as item:
            if not item.is_dir(STAMPS):
                return []
            with item.child(STAMPS) as folder:
                return [kept(name, lambda n=name: self.sealing.open_bytes(folder.read_bytes(n),
                                                                          stamp_context(evidence_id, n)))
                        for name in sorted(folder.names())]
