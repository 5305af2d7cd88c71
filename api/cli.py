"""Service commands of the ``glorot`` CLI (registered through the ``glorot.cli`` entry-point group;
``glorot serve`` is ``glorot_service.cli``'s, since it composes the API with the worker side):

    glorot db upgrade|downgrade|current     Alembic migrations, the only way the schema is made
    glorot keys create --tenant NAME        a new API key, printed as the last line
    glorot keys list [--tenant NAME]        id, tenant, prefix, created, revoked (never the key)
    glorot keys revoke ID                   revoke a key (running APIs honour it within a second)
    glorot submit SPEC.json [--wait]        submit; --wait shows a progress bar until the job ends
    glorot status ID                        the job as JSON
    glorot report ID [-o FILE]              the report as JSON
    glorot report ID --html FILE            the report as a self-contained HTML page
    glorot models upload|list|show|delete   uploaded models (docs/uploads.md)
    glorot suites submit|list|status|report|cancel   multi-seed suites (docs/suites.md)
    glorot compare A B … [--snapshot S]     jobs' per-layer statistics side by side (--json, --figure NAME -o FILE)

Client commands read $GLOROT_URL (default http://127.0.0.1:8000) and $GLOROT_API_KEY, or --url/--api-key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from api import suites_cli
from api.cli_output import write_output


def register(sub: Any) -> None:
    """Add the service commands to ``glorot``'s subparsers."""
    p = sub.add_parser("db", help="database schema migrations (Alembic)")
    dsub = p.add_subparsers(dest="db_command", required=True)
    q = dsub.add_parser("upgrade", help="migrate the database to a revision (default: head)")
    q.add_argument("revision", nargs="?", default="head")
    q.set_defaults(func=_cmd_db_upgrade)
    q = dsub.add_parser("downgrade", help="migrate down to a revision (e.g. base)")
    q.add_argument("revision")
    q.set_defaults(func=_cmd_db_downgrade)
    q = dsub.add_parser("current", help="print the database's schema revision")
    q.set_defaults(func=_cmd_db_current)

    p = sub.add_parser("keys", help="API keys")
    ksub = p.add_subparsers(dest="keys_command", required=True)
    q = ksub.add_parser("create", help="create an API key for a tenant (created if new); prints it last")
    q.add_argument("--tenant", required=True)
    q.set_defaults(func=_cmd_keys_create)
    q = ksub.add_parser("list", help="list API keys (id, tenant, prefix, created, revoked; never the key)")
    q.add_argument("--tenant", default=None)
    q.set_defaults(func=_cmd_keys_list)
    q = ksub.add_parser("revoke", help="revoke an API key by the id `keys list` shows")
    q.add_argument("key_id", type=int)
    q.set_defaults(func=_cmd_keys_revoke)

    _register_uploads(sub)
    suites_cli.register(sub, connect=lambda args: _client(args), run=_run_client)

    p = sub.add_parser("compare", help="compare jobs layer by layer at one snapshot (differences from the first)")
    p.add_argument("--url", default=None, help="service URL (default $GLOROT_URL or http://127.0.0.1:8000)")
    p.add_argument("--api-key", default=None, help="API key (default $GLOROT_API_KEY)")
    p.add_argument("job_ids", nargs="+", metavar="JOB", help="2 to 8 job ids; the first is the baseline")
    p.add_argument("--snapshot", default="init", help="init, final or a 0-based snapshot index (default init)")
    p.add_argument("--json", action="store_true", help="print the whole comparison as JSON")
    p.add_argument("--figure", default=None, help="save this overlay figure instead (e.g. activation_histograms)")
    p.add_argument("-o", "--output", default=None, help="with --figure: the file (.png or .svg)")
    p.set_defaults(func=_cmd_compare)

    for name, helptext, func in (
        ("submit", "submit an experiment spec to the service", _cmd_submit),
        ("status", "print a job's state and progress as JSON", _cmd_status),
        ("report", "print or save a job's report", _cmd_report),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--url", default=None, help="service URL (default $GLOROT_URL or http://127.0.0.1:8000)")
        p.add_argument("--api-key", default=None, help="API key (default $GLOROT_API_KEY)")
        if name == "submit":
            p.add_argument("spec", help="spec JSON file, or - for stdin")
            p.add_argument("--wait", action="store_true", help="wait for the job to end, with a progress bar")
            p.add_argument("--idempotency-key", default=None)
            p.add_argument("--poll", type=float, default=1.0, help="seconds between polls with --wait")
        else:
            p.add_argument("job_id")
        if name == "report":
            p.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
            p.add_argument("--html", default=None, metavar="FILE", help="write the report as a self-contained HTML "
                           "page (figures embedded) instead; - for stdout")
            p.add_argument("--figures", default="svg", choices=("svg", "png"), help="figure format with --html")
        p.set_defaults(func=func)


# --------------------------------------------------------------------------------------- database


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from jobs.migrate import current_revision, upgrade
    from jobs.settings import get_settings

    url = get_settings().resolved_database_url
    upgrade(url, args.revision)
    print(f"database at revision {current_revision(url)}")
    return 0


def _cmd_db_downgrade(args: argparse.Namespace) -> int:
    from jobs.migrate import current_revision, downgrade
    from jobs.settings import get_settings

    url = get_settings().resolved_database_url
    downgrade(url, args.revision)
    print(f"database at revision {current_revision(url)}")
    return 0


def _cmd_db_current(args: argparse.Namespace) -> int:
    from jobs.migrate import current_revision
    from jobs.settings import get_settings

    print(current_revision(get_settings().resolved_database_url) or "(empty: run `glorot db upgrade`)")
    return 0


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from api.services import create_api_key
    from jobs.db import session_factory, transaction
    from jobs.settings import get_settings

    settings = get_settings()
    if settings.should_auto_migrate:  # embedded default: `keys create` may come before the first `serve`
        from jobs.migrate import upgrade

        upgrade(settings.resolved_database_url)
    try:
        with transaction(session_factory(settings.resolved_database_url)) as session:
            key, tenant = create_api_key(session, args.tenant, settings.secret_bytes())
    except (OperationalError, ProgrammingError) as e:
        print(f"glorot keys create: database not ready ({type(e).__name__}); run `glorot db upgrade`",
              file=sys.stderr)
        return 2
    print(f"created an API key for tenant {tenant.name!r} (id {tenant.id}); it is shown only once:")
    print(key)
    return 0


def _cmd_keys_list(args: argparse.Namespace) -> int:
    from api.services import list_api_keys
    from jobs.db import session_factory
    from jobs.settings import get_settings

    with session_factory(get_settings().resolved_database_url)() as session:
        keys = list_api_keys(session, args.tenant)
    print(f"{'id':>6}  {'tenant':24}  {'prefix':12}  {'created':25}  revoked")
    for k in keys:
        revoked = k.revoked_at.isoformat() if k.revoked_at else "-"
        print(f"{k.id:>6}  {k.tenant[:24]:24}  {k.prefix:12}  {k.created_at.isoformat():25}  {revoked}")
    return 0


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    from api.services import revoke_api_key
    from jobs.db import session_factory, transaction
    from jobs.settings import get_settings

    settings = get_settings()
    with transaction(session_factory(settings.resolved_database_url)) as session:
        info = revoke_api_key(session, args.key_id)
    if info is None:
        print(f"glorot keys revoke: no live key with id {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked key {info.id} ({info.prefix}…) of tenant {info.tenant!r}; running APIs stop accepting it "
          f"within {settings.auth_cache_ttl_s:g} s")
    return 0


# ------------------------------------------------------------------------------------------- client


def _client(args: argparse.Namespace) -> Any:
    from api.client import GlorotClient

    return GlorotClient(args.url, args.api_key)


def _run_client(fn: Any) -> int:
    import httpx

    from api.client import GlorotAPIError

    try:
        return int(fn() or 0)
    except GlorotAPIError as e:
        print(f"glorot: {e}", file=sys.stderr)
        return 1
    except httpx.HTTPError as e:
        print(f"glorot: cannot reach the service: {e}", file=sys.stderr)
        return 2


def _cmd_submit(args: argparse.Namespace) -> int:
    from glorot_core.cli import load_json

    try:
        spec = load_json(args.spec)
    except (OSError, json.JSONDecodeError) as e:
        print(f"glorot submit: cannot read {args.spec}: {e}", file=sys.stderr)
        return 2

    def go() -> int:
        with _client(args) as c:
            job = c.submit(spec, idempotency_key=args.idempotency_key)
            print(f"submitted job {job['id']} ({job['state']})", file=sys.stderr)
            if not args.wait:
                print(job["id"])
                return 0
            job = _wait_with_bar(c, job["id"], args.poll)
            print(json.dumps({k: job[k] for k in ("id", "state", "attempt", "error")}))
            return 0 if job["state"] == "SUCCEEDED" else 1

    return _run_client(go)


def _wait_with_bar(client: Any, job_id: str, poll_s: float) -> dict[str, Any]:
    from tqdm import tqdm

    bar = tqdm(total=1000, file=sys.stderr, unit="‰", bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}")

    def update(job: dict[str, Any]) -> None:
        p = job.get("progress") or {}
        bar.n = int(1000 * float(p.get("fraction") or 0.0))
        steps = f" step {p.get('step')}/{p.get('total_steps')}" if p.get("total_steps") else ""
        bar.set_description(f"{job['state'].lower():9s} {p.get('phase', '')}{steps}")
        bar.refresh()

    try:
        return client.wait(job_id, poll_s=poll_s, on_update=update)
    finally:
        bar.close()


def _cmd_status(args: argparse.Namespace) -> int:
    def go() -> int:
        with _client(args) as c:
            print(json.dumps(c.job(args.job_id), indent=1))
        return 0

    return _run_client(go)


def _cmd_report(args: argparse.Namespace) -> int:
    def go() -> int:
        if args.html is not None:
            with _client(args) as c:
                page = c.report_html(args.job_id, figures=args.figures)
            if args.html == "-":
                sys.stdout.write(page)
                return 0
            Path(args.html).write_text(page, encoding="utf-8")
            print(f"wrote {args.html}", file=sys.stderr)
            return 0
        with _client(args) as c:
            text = json.dumps(c.report(args.job_id), indent=1)
        write_output(text, args.output)
        return 0

    return _run_client(go)


def format_comparison(body: dict[str, Any]) -> str:
    """A comparison as text: the runs, then per layer each statistic's values and differences from the first."""
    runs = body["runs"]
    names = [chr(ord("A") + k) for k in range(len(runs))]
    lines = [f"snapshot {body['snapshot']}"]
    lines += [f"  {n} = {r['job_id']}  {r.get('init')} init, {r.get('activation')}, update {r.get('step')}"
              for n, r in zip(names, runs, strict=True)]
    head = "".join(f"{n:>12}" for n in names) + "".join(f"{n + '-A':>12}" for n in names[1:])
    for lay in body["layers"]:
        lines.append(f"layer {lay['index']} ({lay['name']}){'':8}{head}")
        for stat, entry in lay["statistics"].items():
            cells = [*entry["values"], *entry["differences"]]
            lines.append(f"  {stat:26}" + "".join(f"{_cell(v):>12}" for v in cells))
    flagged = [s for s, same in body.get("same_bins", {}).items() if not same]
    if flagged:
        lines.append(f"histograms on different bins (not compared bin by bin): {', '.join(flagged)}")
    return "\n".join(lines)


def _cell(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float | int) else str(v)


def _cmd_compare(args: argparse.Namespace) -> int:
    def go() -> int:
        with _client(args) as c:
            if args.figure:
                out = args.output or f"{args.figure}.png"
                fmt = "svg" if out.endswith(".svg") else "png"
                Path(out).write_bytes(c.compare_figure(args.job_ids, args.figure, fmt=fmt, snapshot=args.snapshot))
                print(f"wrote {out}", file=sys.stderr)
                return 0
            body = c.compare(args.job_ids, snapshot=args.snapshot)
        print(json.dumps(body, indent=1) if args.json else format_comparison(body))
        return 0

    return _run_client(go)


# ------------------------------------------------------------------------------------------ uploads


def _register_uploads(sub: Any) -> None:
    p = sub.add_parser("models", help="uploaded models: upload, list, show, delete")
    msub = p.add_subparsers(dest="models_command", required=True)
    q = msub.add_parser("upload", help="upload a model file; prints the model with its probe points")
    q.add_argument("file")
    q.add_argument("--format", required=True, choices=("safetensors", "state_dict", "exported"))
    q.add_argument("--name", default=None)
    q.add_argument("--architecture", default=None, help="JSON file describing the network (weights-only formats)")
    q.add_argument("--input-shape", default=None, help="one example's input shape, e.g. 1,28,28")
    q.set_defaults(func=_cmd_models_upload)
    q = msub.add_parser("list", help="list uploaded models (newest first)")
    q.set_defaults(func=_cmd_models_list)
    for name, func in (("show", _cmd_models_show), ("delete", _cmd_models_delete)):
        q = msub.add_parser(name, help=f"{name} an uploaded model")
        q.add_argument("model_id")
        q.set_defaults(func=func)
    for q in msub.choices.values():
        q.add_argument("--url", default=None, help="service URL (default $GLOROT_URL or http://127.0.0.1:8000)")
        q.add_argument("--api-key", default=None, help="API key (default $GLOROT_API_KEY)")


def _cmd_models_upload(args: argparse.Namespace) -> int:
    meta: dict[str, Any] = {"format": args.format}
    if args.name:
        meta["name"] = args.name
    if args.architecture:
        from glorot_core.cli import load_json

        try:
            meta["architecture"] = load_json(args.architecture)
        except (OSError, json.JSONDecodeError) as e:
            print(f"glorot models upload: cannot read {args.architecture}: {e}", file=sys.stderr)
            return 2
    if args.input_shape:
        meta["input"] = {"shape": [int(d) for d in args.input_shape.split(",")]}

    def go() -> int:
        with _client(args) as c:
            print(json.dumps(c.upload_model(args.file, meta), indent=1))
        return 0

    return _run_client(go)


def _cmd_models_list(args: argparse.Namespace) -> int:
    def go() -> int:
        with _client(args) as c:
            cursor = None
            while True:
                page = c.models(cursor=cursor)
                for m in page["items"]:
                    print(f"{m['id']}  {m['format']:11}  {m['size']:>12}  {len(m['probe_points']):>3} probe points  "
                          f"{m.get('name') or ''}")
                cursor = page.get("next_cursor")
                if not cursor:
                    return 0

    return _run_client(go)


def _cmd_models_show(args: argparse.Namespace) -> int:
    def go() -> int:
        with _client(args) as c:
            print(json.dumps(c.model(args.model_id), indent=1))
        return 0

    return _run_client(go)


def _cmd_models_delete(args: argparse.Namespace) -> int:
    def go() -> int:
        with _client(args) as c:
            c.delete_model(args.model_id)
        print(f"deleted model {args.model_id}", file=sys.stderr)
        return 0

    return _run_client(go)
