"""``glorot suites submit|list|status|report|cancel``: multi-seed suites from the command line (docs/suites.md).

    glorot suites submit SUITE.json [--seeds N] [--wait]        a suite body ({"specs": […], "seeds": N} or a preset's)
    glorot suites submit --preset NAME [--budget quick] --seeds N [--wait]
    glorot suites list [--state STATE] [--limit N]              one line per suite, newest first
    glorot suites status ID                                     the aggregate state and the children as JSON
    glorot suites report ID [-o FILE] [--summary]               the suite report (JSON, or a table per configuration)
    glorot suites cancel ID                                     cancel every child that has not ended

Registered by ``api.cli.register``, which hands in its client and error handling; the same
$GLOROT_URL / $GLOROT_API_KEY (or --url / --api-key) as the other client commands.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable
from typing import Any

from api.cli_output import write_output


def register(sub: Any, *, connect: Callable[[argparse.Namespace], Any],
             run: Callable[[Callable[[], int]], int]) -> None:
    """Add ``glorot suites …`` to ``glorot``'s subparsers. ``connect(args)`` makes the API client and
    ``run(fn)`` runs a client call, turning API and connection errors into messages and exit codes
    (``api.cli``'s, handed in so that this module does not import it back)."""
    p = sub.add_parser("suites", help="multi-seed suites: submit, list, status, report, cancel")
    ssub = p.add_subparsers(dest="suites_command", required=True)
    q = ssub.add_parser("submit", help="submit a suite (a body file, or --preset with --seeds)")
    q.add_argument("body", nargs="?", default=None, help="suite JSON file, or - for stdin")
    q.add_argument("--preset", default=None, help="a preset name instead of a body file")
    q.add_argument("--budget", default="quick", choices=("quick", "paper"), help="with --preset (default quick)")
    q.add_argument("--seeds", type=int, default=None, help="number of seeds (replaces the body's)")
    q.add_argument("--wait", action="store_true", help="wait until every child has ended, then print the state")
    q.add_argument("--idempotency-key", default=None)
    q.add_argument("--poll", type=float, default=2.0, help="seconds between polls with --wait")
    q.set_defaults(func=_cmd_submit)
    q = ssub.add_parser("list", help="list suites, newest first: id, state, created, children ended, configurations")
    q.add_argument("--state", default=None, help="only suites in this aggregate state (QUEUED, RUNNING, SUCCEEDED, "
                   "FAILED, CANCELLED)")
    q.add_argument("--limit", type=int, default=None, help="at most this many (the newest)")
    q.set_defaults(func=_cmd_list)
    for name, helptext, func in (("status", "print a suite's state and children as JSON", _cmd_status),
                                 ("report", "print or save a suite's report", _cmd_report),
                                 ("cancel", "cancel a suite's children that have not ended", _cmd_cancel)):
        q = ssub.add_parser(name, help=helptext)
        q.add_argument("suite_id")
        if name == "report":
            q.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
            q.add_argument("--summary", action="store_true", help="a table of test error per configuration")
        q.set_defaults(func=func)
    for q in ssub.choices.values():
        q.set_defaults(connect=connect, run=run)
        q.add_argument("--url", default=None, help="service URL (default $GLOROT_URL or http://127.0.0.1:8000)")
        q.add_argument("--api-key", default=None, help="API key (default $GLOROT_API_KEY)")


def _run(args: argparse.Namespace, fn: Any) -> int:
    def go() -> int:
        with args.connect(args) as c:
            return int(fn(c) or 0)

    return int(args.run(go))


def _body(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.preset is not None:
        if args.body is not None:
            print("glorot suites submit: give a body file or --preset, not both", file=sys.stderr)
            return None
        body: dict[str, Any] = {"preset": args.preset, "budget": args.budget}
    elif args.body is None:
        print("glorot suites submit: give a suite body file (or - for stdin) or --preset", file=sys.stderr)
        return None
    else:
        from glorot_core.cli import load_json

        try:
            body = load_json(args.body)
        except (OSError, json.JSONDecodeError) as e:
            print(f"glorot suites submit: cannot read {args.body}: {e}", file=sys.stderr)
            return None
    if args.seeds is not None:
        body["seeds"] = args.seeds
    if "seeds" not in body:
        print("glorot suites submit: how many seeds? (--seeds N or \"seeds\" in the body)", file=sys.stderr)
        return None
    return body


def _cmd_submit(args: argparse.Namespace) -> int:
    body = _body(args)
    if body is None:
        return 2

    def go(c: Any) -> int:
        suite = c.submit_suite(body, idempotency_key=args.idempotency_key)
        print(f"submitted suite {suite['id']}: {suite['children_expected']} child jobs", file=sys.stderr)
        if not args.wait:
            print(suite["id"])
            return 0
        suite = c.wait_suite(suite["id"], poll_s=args.poll, on_update=_progress_line)
        print(file=sys.stderr)
        print(json.dumps({k: suite[k] for k in ("id", "state", "counts", "failed")}))
        return 0 if suite["state"] == "SUCCEEDED" else 1

    return _run(args, go)


def _progress_line(suite: dict[str, Any]) -> None:
    counts = " ".join(f"{k} {v}" for k, v in suite["counts"].items() if v)
    print(f"\r{suite['state'].lower():9s} {100 * suite['progress']:5.1f}%  {counts}   ", end="", file=sys.stderr)


def suite_line(suite: dict[str, Any]) -> str:
    """One suite as ``glorot suites list`` prints it: id, state, created, children ended of expected, and
    each configuration's label with its number of seeds."""
    ended = sum(n for state, n in suite["counts"].items() if state not in ("queued", "running"))
    configs = "; ".join(f"{c['label']} ×{len(c['seeds'])}" for c in suite["configs"])
    return (f"{suite['id']}  {suite['state']:9}  {suite['created_at'][:19]}  "
            f"{ended:>3}/{suite['children_expected']:<3} ended  {configs}")


def _cmd_list(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        print("glorot suites list: --limit must be at least 1", file=sys.stderr)
        return 2

    def go(c: Any) -> int:
        suites = c.iter_suites(state=args.state, limit=args.limit)
        for suite in itertools.islice(suites, args.limit):
            print(suite_line(suite))
        return 0

    return _run(args, go)


def _cmd_status(args: argparse.Namespace) -> int:
    return _run(args, lambda c: print(json.dumps(c.suite(args.suite_id), indent=1)))


def _cmd_cancel(args: argparse.Namespace) -> int:
    def go(c: Any) -> int:
        suite = c.cancel_suite(args.suite_id)
        print(json.dumps({k: suite[k] for k in ("id", "state", "cancel_requested", "counts")}))
        return 0

    return _run(args, go)


def summary(report: dict[str, Any]) -> str:
    """The suite report as a table: per configuration, the seeds that succeeded and the final test error
    (mean ± the 95 % half-width, in %), with the paper's Table 1 value where there is one."""
    lines = [f"suite {report['suite_id']}  {report['state']}{'' if report['complete'] else ' (incomplete)'}",
             f"{'configuration':44} {'n':>3}  {'test error %':>20}  {'paper %':>8}"]
    for config in report["configs"]:
        te = next((s for s in config["statistics"] if s["layer"] == 0 and s["statistic"] == "test_error"), None)
        if te is None or te["mean"] is None:
            ours = "-"
        elif te["half_width"] is None:
            ours = f"{100 * te['mean']:.2f}"
        else:
            ours = f"{100 * te['mean']:.2f} ± {100 * te['half_width']:.2f}"
        paper = config["paper"]["test_error_percent"] if config["paper"] else None
        lines.append(f"{config['label'][:44]:44} {config['n_succeeded']:>3}  {ours:>20}  "
                     f"{'-' if paper is None else f'{paper:g}':>8}")
    lines += [f"FAILED {f['job_id']} (configuration {f['config_index']}, seed {f['seed']}): "
              f"{(f['error'] or '').splitlines()[0][:100] if f['error'] else ''}" for f in report["failed"]]
    return "\n".join(lines)


def _cmd_report(args: argparse.Namespace) -> int:
    def go(c: Any) -> int:
        report = c.suite_report(args.suite_id)
        write_output(summary(report) if args.summary else json.dumps(report, indent=1), args.output)
        return 0

    return _run(args, go)
