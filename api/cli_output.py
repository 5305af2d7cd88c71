"""Where the CLI's commands put what they fetched: standard output for ``-``, otherwise a file (and a
line on standard error saying so, so that a pipe's output stays the document alone)."""

from __future__ import annotations

import sys
from pathlib import Path


def write_output(text: str, destination: str) -> None:
    """Print ``text`` when ``destination`` is ``-``; otherwise write it to that file and say so on stderr."""
    if destination == "-":
        print(text)
    else:
        Path(destination).write_text(text, encoding="utf-8")
        print(f"wrote {destination}", file=sys.stderr)
