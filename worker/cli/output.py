"""What the command prints: one JSON document for scripts, escaped text for people."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3
EXIT_BROKEN_PIPE = 141  # the reader of our output went away (`evidence status | head`), as a shell reports SIGPIPE


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def printable(value: Any) -> str:
    """``value`` as text in which no byte can move the cursor, end a line or reorder what follows.

    File names, notes and reasons come from uploaders: a name holding a
    newline, an escape sequence or a right-to-left override could otherwise
    forge whole lines of output. Such characters are shown as escapes.
    """
    text = str(value)
    return "".join(
        ch if ch == " " or unicodedata.category(ch)[0] not in "CZ" else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )
