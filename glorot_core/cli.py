"""The ``glorot`` command line.

glorot_core provides ``run`` and ``validate``; other packages add commands (``serve``, ``worker``,
``db``, ``keys``, ``submit``, …) through the ``glorot.cli`` entry-point group: each entry point is a
function ``register(subparsers)``. glorot_core thus never imports the service packages.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

from pydantic import ValidationError


def _load_json(path: str) -> object:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return json.loads(text)


def format_validation_error(err: ValidationError) -> str:
    """One line per error: ``field.path: message``."""
    return "\n".join(f"{'.'.join(str(p) for p in e['loc']) or '(spec)'}: {e['msg']}" for e in err.errors())


def _cmd_validate(args: argparse.Namespace) -> int:
    from glorot_core.spec import validate_spec

    try:
        spec = validate_spec(_load_json(args.spec))
    except json.JSONDecodeError as e:
        print(f"{args.spec}: not JSON: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:
        print(format_validation_error(e), file=sys.stderr)
        return 1
    print(f"ok: {spec.name} ({spec.model.parameter_count:,} parameters)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from glorot_core.runner import run_cli

    return run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glorot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate an experiment spec; prints field-level errors")
    p.add_argument("spec", help="spec JSON file, or - for stdin")
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("run", help="run an experiment locally and write its JSON report")
    p.add_argument("spec", help="spec JSON file, or - for stdin")
    p.add_argument("-o", "--output", default="-", help="report file (default: stdout)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(func=_cmd_run)
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
