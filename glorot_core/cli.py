"""The ``glorot`` command line: glorot_core's ``run`` and ``validate``, and the commands other packages add.

Other packages add commands (``serve``, ``worker``, ``db``, ``keys``, ``submit``, …) through the
``glorot.cli`` entry-point group: each entry point is a function ``register(subparsers)``, so
glorot_core never imports the service packages. Importing this module does not import torch (seconds):
the commands that need it import the engine when they run, so ``glorot --help`` and the service's
client commands start at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from glorot_core.errors import Cancelled, GlorotError
from glorot_core.progress import Progress

DESCRIPTION = """\
glorot diagnoses how signals and gradients flow through a deep network, layer by layer, after
Glorot & Bengio (2010): activation and gradient statistics, saturation, Jacobian spectra and the
paper's linear theory at each snapshot of a training run, with verdicts that name the layer and the
fix. `glorot run SPEC` runs an experiment here and writes its JSON report; `glorot validate SPEC`
checks a spec. With the service installed, more commands serve the API, run workers and submit jobs.
"""

EPILOG = """\
examples:
  glorot validate spec.json
  glorot run spec.json -o report.json
  echo '{"train": {"steps": 0}}' | glorot run - -o report.json    (a diagnosis at initialisation)
"""


class JSONFileError(json.JSONDecodeError):
    """A JSON syntax error in a file, shown with its line and a caret under the column."""

    def __init__(self, path: str, err: json.JSONDecodeError) -> None:
        super().__init__(err.msg, err.doc, err.pos)
        self.path = path

    def __str__(self) -> str:
        source = "stdin" if self.path == "-" else self.path
        lines = self.doc.splitlines() or [""]
        line = lines[self.lineno - 1] if self.lineno - 1 < len(lines) else ""
        shown, col = _excerpt(line, self.colno - 1)
        return (f"{source}:{self.lineno}:{self.colno}: not JSON: {self.msg} (line {self.lineno}, column {self.colno})\n"
                f"  {shown}\n  {' ' * col}^")


def _excerpt(line: str, col: int, width: int = 100) -> tuple[str, int]:
    """At most ``width`` characters of ``line`` around column ``col`` (0-based), and col within them."""
    line = line.expandtabs(1)
    if len(line) <= width:
        return line, col
    start = max(0, min(col - width // 2, len(line) - width))
    return ("…" if start else "") + line[start:start + width], col - start + (1 if start else 0)


def load_json(path: str) -> Any:
    """The JSON document in file ``path`` (``-``: stdin); a syntax error raises :class:`JSONFileError`,
    whose message names the file, line and column and shows the line with a caret."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise JSONFileError(path, e) from None


def format_validation_error(err: ValidationError) -> str:
    """One line per error: ``field.path: message``."""
    return "\n".join(f"{'.'.join(str(p) for p in e['loc']) or '(spec)'}: {e['msg']}" for e in err.errors())


def _read_spec(path: str, validate: Any) -> Any:
    """The validated spec in ``path``, or the exit status after printing why it is not one
    (2: unreadable or not JSON, 1: not a valid spec)."""
    try:
        return validate(load_json(path))
    except (OSError, JSONFileError) as e:
        print(e, file=sys.stderr)
        return 2
    except ValidationError as e:
        print(format_validation_error(e), file=sys.stderr)
        return 1


def _cmd_validate(args: argparse.Namespace) -> int:
    from glorot_core.spec import validate_spec  # imports torch: only when the command runs

    spec = _read_spec(args.spec, validate_spec)
    if isinstance(spec, int):
        return spec
    count = getattr(spec.model, "parameter_count", None)  # an uploaded model's is known once loaded
    print(f"ok: {spec.name}" + (f" ({count:,} parameters)" if count is not None else f" (model: {spec.model.source})"))
    return 0


class _Bar:
    """A tqdm bar over training steps whose clock starts with training, not with the set-up.

    Building the data and the initial snapshot take seconds before the first step; counted as time
    spent on step 0 they made the first estimate absurd (48 minutes for a 30-second run).
    """

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=max(total, 1), unit="step", file=sys.stderr)
        self.training = False

    def __call__(self, p: Progress) -> None:
        if not self.training and p.phase == "train":
            self.training = True
            self.bar.reset(total=self.bar.total)  # restarts the clock: the rate counts training only
        if p.step > self.bar.n:
            self.bar.update(p.step - self.bar.n)
        self.bar.set_description(p.phase, refresh=True)

    def close(self) -> None:
        self.bar.close()


def run_cli(args: argparse.Namespace) -> int:
    """``glorot run SPEC -o REPORT``: validate, run with a progress bar on a terminal, write JSON."""
    from glorot_core.runner import run_experiment  # imports torch: only when the command runs
    from glorot_core.spec import validate_spec

    spec = _read_spec(args.spec, validate_spec)
    if isinstance(spec, int):
        return spec
    bar = _Bar(spec.train.steps) if not args.no_progress and sys.stderr.isatty() else None
    try:
        report = run_experiment(spec, progress=bar)
    except (GlorotError, Cancelled) as e:
        print(f"glorot run: {e}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    text = json.dumps(report, indent=1)
    if args.output == "-":
        print(text)
    else:
        Path(args.output).write_text(text)
        for v in report["verdicts"]:
            print(f"[{v['severity']}] {v['code']}: {v['message']}", file=sys.stderr)
    return 0


def _figure_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("report", help="a JSON report (glorot run -o, or the service's report), or - for stdin")
    p.add_argument("-o", "--output-dir", default="figures", help="folder to write NAME.png / NAME.svg into")
    p.add_argument("--format", choices=["png", "svg", "both"], default="both", help="default: both")


def _cmd_figures(args: argparse.Namespace) -> int:
    from glorot_core.figures.command import run  # imports matplotlib: only when the command runs

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glorot", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("validate", help="validate an experiment spec; prints field-level errors")
    p.add_argument("spec", help="spec JSON file, or - for stdin")
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("run", help="run an experiment locally and write its JSON report")
    p.add_argument("spec", help="spec JSON file, or - for stdin")
    p.add_argument("-o", "--output", default="-", help="report file (default: stdout)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(func=run_cli)
    p = sub.add_parser("figures", help="draw a report's figures as the paper draws them (PNG and SVG) into a folder")
    p.set_defaults(func=_cmd_figures)
    _figure_arguments(p)
    for ep in entry_points(group="glorot.cli"):
        try:
            register = ep.load()
        except ModuleNotFoundError as e:  # a partial install: core commands still work
            print(f"glorot: commands from {ep.value} unavailable: {e}", file=sys.stderr)
            continue
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
