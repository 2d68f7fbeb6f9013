"""The README and docs/ as a reader meets them: every link leads somewhere, every everyday command exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from support import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rules) gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    found, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#+ (.*)", line)):
            found.add(_slug(m.group(1)))
    return found


def test_every_link_in_the_readme_and_docs_leads_to_a_file_and_heading_that_exist():
    broken = []
    for page in DOCS:
        for target in _LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue   # a web address: not followed in tests (no network in CI)
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.is_relative_to(REPO) or not path.exists():
                broken.append(f"{page.name}: {target} (no such file in the repository)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_the_readme_stays_short_and_names_every_doc():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 160
    assert readme.startswith("# Evidence worker\n\n```sh\nbash .ci/setup && .venv/bin/evidence demo")
    for page in DOCS[1:]:
        assert f"(docs/{page.name})" in readme, f"the README does not link docs/{page.name}"


def test_the_readmes_everyday_commands_exist():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Everyday commands", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    named = {line.split()[1] for line in block.splitlines() if line.startswith("evidence ")}
    listed = subprocess.run([str(REPO / ".venv" / "bin" / "evidence"), "--help"], capture_output=True, text=True,
                            check=True).stdout
    commands = set(re.findall(r"^    ([a-z][a-z-]+) ", listed, flags=re.M))
    assert len(named) >= 10 and named <= commands, named - commands
