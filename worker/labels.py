"""Names that travel in custody lines, manifests and reports (a recipient, an operator's role): plain
visible text only.

A control character or a direction override (U+202E turns "gpj.exe" around)
makes a report say something else than what was typed; such a name is
refused with the reason, never written raw or silently changed.
"""

from __future__ import annotations

import unicodedata

MAX_LENGTH = 200


def check_label(what: str, text: str) -> str:
    """``text`` if it is plain visible text of at most MAX_LENGTH characters; ValueError naming ``what`` if not."""
    hidden = sorted({f"U+{ord(ch):04X}" for ch in text if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co")})
    if hidden:
        raise ValueError(f"{what} holds control or direction-changing characters ({', '.join(hidden)}); "
                         "use plain visible text")
    if len(text) > MAX_LENGTH:
        raise ValueError(f"{what} is longer than {MAX_LENGTH} characters")
    return text
