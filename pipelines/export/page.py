"""One self-contained HTML page for a person to read and print: the verification report, the custody report.

Nothing outside the file (no scripts, fonts, images, links to fetch; a
Content-Security-Policy that forbids them), so it opens the same offline, in
ten years, and prints. Every value from the evidence goes through ``e``: a
case name or an actor is text, never markup.
"""

from __future__ import annotations

import html
from typing import Any

STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 11pt; line-height: 1.45; margin: 2em auto;
       max-width: 48em; color: #111; }
h1 { font-size: 18pt; margin-bottom: 0.2em; } h2 { font-size: 13pt; margin-top: 1.6em; border-bottom: 1px solid #999; }
table { border-collapse: collapse; width: 100%; } td, th { border: 1px solid #bbb; padding: 0.3em 0.5em;
       vertical-align: top; text-align: left; }
th { background: #eee; width: 28%; } .hash, code, pre { font-family: "DejaVu Sans Mono", monospace;
       font-size: 9pt; word-break: break-all; white-space: pre-wrap; }
pre { background: #f4f4f4; border: 1px solid #ccc; padding: 0.5em; }
.verdict { font-size: 13pt; font-weight: bold; padding: 0.6em; border: 2px solid; }
.ok { color: #0a5a0a; } .fail { color: #9a0000; } .verdict.ok { border-color: #0a5a0a; }
.verdict.fail { border-color: #9a0000; }
.warning { color: #9a0000; font-weight: bold; }
"""


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def row(label: str, value: Any, *, mono: bool = False) -> str:
    cell = f'<span class="hash">{e(value)}</span>' if mono else e(value)
    return f"<tr><th>{e(label)}</th><td>{cell}</td></tr>"


def document(title: str, body: str) -> str:
    """The whole page around ``body`` (already markup, its values escaped)."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{e(title)}</title><style>{STYLE}</style></head>
<body>
{body}
</body></html>
"""
