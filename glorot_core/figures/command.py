"""``glorot figures REPORT.json -o DIR``: every figure of a report, drawn offline into a folder.

``glorot_core.cli`` declares the arguments and imports this module only when the command runs, so
``glorot --help`` does not import matplotlib.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from glorot_core.figures import FORMATS, available, write_all


def run(args: argparse.Namespace) -> int:
    """Write the figures; prints one line per figure, or why none could be drawn."""
    from glorot_core.cli import JSONFileError, load_json

    try:
        report = load_json(args.report)
    except (OSError, JSONFileError) as e:
        print(e, file=sys.stderr)
        return 2
    if not isinstance(report, dict) or "snapshots" not in report:
        print(f"glorot figures: {args.report} is not a glorot report (no snapshots)", file=sys.stderr)
        return 1
    formats = FORMATS if args.format == "both" else (args.format,)
    defs = {d.name: d for d in available(report)}
    if not defs:
        print("glorot figures: the report has no figure to draw", file=sys.stderr)
        return 1
    for path in write_all(report, Path(args.output_dir), formats):
        d = defs[path.stem]
        print(f"{path}  ({d.paper}: {d.title})")
    return 0
