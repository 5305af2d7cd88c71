"""GET /v1/jobs/{id}/report.html and ``glorot report ID --html FILE`` on SQLite and PostgreSQL, through a
real uvicorn server, and the saved page opened in a real browser (Debian's headless Chromium).

A tiny job (3 hidden layers of 16, 20 updates, snapshots at 0, 10, 20) whose spec's name is markup runs
to SUCCEEDED; its page carries this job's numbers and the figures the figure routes serve (byte for
byte, PNG), shows the name as text, and is the same page the CLI saves. In Chromium the saved page runs
no script, every image loads (decoded, with its size), each figure on screen is the figure's PNG pixel
for pixel (within the colour rounding of a screenshot), the first screen is not blank, and the print
layout drops the navigation, fits every table and figure in an A4 page's width, and prints to a PDF
of several pages.
"""

from __future__ import annotations

import io
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from browser_support import ink_fraction, load_page
from fastapi.testclient import TestClient
from PIL import Image
from service_support import auth, wait_for, wait_state

from glorot_core import report_html
from glorot_core.cli import main
from glorot_core.report_html import view
from glorot_service.app import build_app
from jobs.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/html_parse.py, shared with the unit tests
from html_parse import decode_data_uri, is_image, parse

NAME = '<script>alert("x")</script> & <b>tiny</b>'
SPEC: dict[str, Any] = {
    "name": NAME, "model": {"hidden": [16, 16, 16]}, "train": {"steps": 20}, "data": {"test_examples": 100},
    "diagnostics": {"every": 10, "monitor_examples": 40, "jacobian": {"examples": 2}},
}
PIXEL_TOLERANCE = 1 / 255
"""Mean absolute difference per channel between a figure's PNG and its screenshot. The page shows the PNG
at its own size (1 CSS px = 1 device px), so only a browser's colour rounding (one level) may differ;
here they were identical. Another figure of the same report differs by ≈0.03 (≈8 levels) on average,
though most of both is white background; a scaled or missing image fails the size check first."""


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    """The composed app (local runner) under a real uvicorn on a free port, for the CLI's HTTP client."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    srv = uvicorn.Server(uvicorn.Config(build_app(settings), log_config=None, lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()


def _layer_cells(report: dict[str, Any], snap: dict[str, Any]) -> list[list[str]]:
    """The rows the page should show for a snapshot, from the JSON report."""
    rows = []
    for lay, described in zip(snap["layers"], report["layers"], strict=True):
        cells = [view.number_text(None if lay[c.section] is None else lay[c.section][c.key], percent=c.percent)
                 for c in view.LAYER_COLUMNS]
        rows.append([f"{lay['index']} {lay['name']}", str(described["units"]), *cells])
    return rows


def test_report_html_served_saved_and_seen_in_a_browser(server: str, key: str, other_key: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with httpx.Client(base_url=server, timeout=120) as http:
        r = http.post("/v1/experiments", json=SPEC, headers=auth(key))
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert wait_state(http, key, job_id, {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"
        report = http.get(f"/v1/jobs/{job_id}/report", headers=auth(key)).json()
        listing = http.get(f"/v1/jobs/{job_id}/figures", headers=auth(key)).json()["figures"]

        r = http.get(f"/v1/jobs/{job_id}/report.html", params={"figures": "png"}, headers=auth(key))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.headers["content-security-policy"].startswith(report_html.CONTENT_SECURITY_POLICY)
        assert r.headers["x-content-type-options"] == "nosniff"
        html = r.text

        # The page is this job's: its id, its numbers, its verdicts, its spec; the name is text.
        page = parse(html)
        assert job_id in page.text and NAME in page.text
        assert "<script" not in html.lower() and "<b>tiny" not in html
        tables = page.tables_of("layers")
        snaps = report["snapshots"]
        assert [page.body_rows(t) for t in tables] == [_layer_cells(report, snaps[0]), _layer_cells(report, snaps[-1])]
        for v in report["verdicts"]:
            assert v["message"] in page.text
        assert page.pre[0].strip() and json.loads(page.pre[0]) == report["spec"]

        # Its figures are the figure routes' PNGs, byte for byte (the same cache).
        images = page.images()
        assert [i["data-figure"] for i in images] == [f["name"] for f in listing] and len(images) >= 8
        pngs: dict[str, bytes] = {}
        for img in images:
            media, data = decode_data_uri(img["src"] or "")
            assert media == "image/png" and is_image(media, data)
            served = http.get(f"/v1/jobs/{job_id}/figures/{img['data-figure']}.png", headers=auth(key))
            assert served.content == data
            pngs[img["data-figure"] or ""] = data
        svg_page = http.get(f"/v1/jobs/{job_id}/report.html", headers=auth(key)).text  # default: SVG
        assert {decode_data_uri(i["src"] or "")[0] for i in parse(svg_page).images()} == {"image/svg+xml"}

        # Another tenant's key, or none, gets nothing.
        assert http.get(f"/v1/jobs/{job_id}/report.html", headers=auth(other_key)).status_code == 404
        assert http.get(f"/v1/jobs/{job_id}/report.html").status_code == 401

    # glorot report ID --html FILE saves the same page.
    out = tmp_path / "report.html"
    assert main(["report", job_id, "--html", str(out), "--figures", "png", "--url", server, "--api-key", key]) == 0
    assert out.read_text(encoding="utf-8") == html
    capsys.readouterr()
    assert main(["report", job_id, "--html", "-", "--figures", "png", "--url", server, "--api-key", key]) == 0
    assert capsys.readouterr().out == html

    # In Chromium: no script, every image decoded at its size, figures on screen = the PNGs, not blank, printable.
    seen = load_page(out)
    assert seen.scripts == 0
    assert seen.title.startswith(NAME)  # the markup of the name is the title's text
    assert [i["figure"] for i in seen.images] == list(pngs)
    for img in seen.images:
        png = Image.open(io.BytesIO(pngs[img["figure"]]))
        assert img["complete"] and img["scheme"] == "data"
        assert (img["width"], img["height"]) == png.size, img
    for name, shot in seen.figure_shots.items():
        want = np.asarray(Image.open(io.BytesIO(pngs[name])).convert("RGB"), dtype=float) / 255
        got = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=float) / 255
        assert got.shape == want.shape, (name, got.shape, want.shape)
        assert np.abs(got - want).mean() <= PIXEL_TOLERANCE, name
    colours, ink = ink_fraction(seen.screenshot)
    assert colours > 2 and ink > 0.01, (colours, ink)  # text, tables and rules on the first screen
    assert seen.print_toc_display == "none" and seen.print_too_wide == []
    assert seen.pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", seen.pdf)) >= 2


def test_report_html_refusals(idle_client: TestClient, key: str) -> None:
    r = idle_client.post("/v1/experiments", json=SPEC, headers=auth(key))
    job_id = r.json()["id"]
    html = idle_client.get(f"/v1/jobs/{job_id}/report.html", headers=auth(key))
    as_json = idle_client.get(f"/v1/jobs/{job_id}/report", headers=auth(key))
    assert html.status_code == as_json.status_code == 409
    assert html.headers["content-type"] == "application/problem+json"
    assert html.json()["type"] == as_json.json()["type"] and html.json()["state"] == "QUEUED"
    assert idle_client.get(f"/v1/jobs/{job_id}/report.html").status_code == 401
    assert idle_client.get("/v1/jobs/0123abcd/report.html", headers=auth(key)).status_code == 404
    bad = idle_client.get(f"/v1/jobs/{job_id}/report.html", params={"figures": "gif"}, headers=auth(key))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "figures", bad.text
    twice = idle_client.get(f"/v1/jobs/{job_id}/report.html?figures=png&figures=svg", headers=auth(key))
    assert twice.status_code == 422 and twice.json()["errors"][0]["field"] == "figures", twice.text


# -------------------------------------------------------------------------------------------- suites

SUITE_TINY: dict[str, Any] = {"model": {"hidden": [16, 16]}, "train": {"steps": 20}, "data": {"test_examples": 100},
                              "diagnostics": {"every": 10, "monitor_examples": 40, "jacobian": {"mode": "off"}}}
"""A Table 1 preset cut to 2 hidden layers of 16 and 20 updates: the page has the paper's value to show."""


def _suite_stat_cells(stat: dict[str, Any]) -> list[str]:
    """The row the page should show for one statistic of the suite report (fractions as percentages)."""
    pct = stat["statistic"] in ("test_error", "saturation.fraction")

    def num(v: Any) -> str:
        return view.number_text(v, percent=pct)

    ci = stat["ci95"]
    return [stat["statistic"], "network" if stat["layer"] == 0 else str(stat["layer"]), str(stat["n"]),
            str(stat["missing"]), num(stat["mean"]), num(stat["std"]),
            "—" if ci is None else f"[{num(ci[0])}, {num(ci[1])}]",
            "; ".join(f"{v['seed']}: {num(v['value'])}" for v in stat["values"])]


def test_suite_report_html(client: TestClient, key: str, other_key: str, tmp_path: Path) -> None:
    body = {"preset": "table1_tanh_shapeset3x2", "budget": "quick", "overrides": SUITE_TINY, "seeds": 2}
    r = client.post("/v1/suites", json=body, headers=auth(key))
    assert r.status_code == 201, r.text
    suite_id = r.json()["id"]
    wait_for(lambda: client.get(f"/v1/suites/{suite_id}", headers=auth(key)).json(), lambda s: s["complete"], 180)
    report = client.get(f"/v1/suites/{suite_id}/report", headers=auth(key)).json()
    r = client.get(f"/v1/suites/{suite_id}/report.html", params={"figures": "png"}, headers=auth(key))
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8", r.text
    assert r.headers["content-security-policy"].startswith(report_html.CONTENT_SECURITY_POLICY)
    page = parse(r.text)
    (config,) = report["configs"]
    assert config["n_succeeded"] == 2 and config["paper"] is not None

    (overview,) = page.tables_of("suite-overview")
    te = next(s for s in config["statistics"] if s["statistic"] == "test_error")
    row = page.body_rows(overview)[0]
    assert row[0] == config["label"] and row[1] == "2 / 2"
    assert row[2:5] == _suite_stat_cells(te)[4:7]  # mean, std, interval: the report's, as percentages
    assert row[5] == f"{view.number_text(config['paper']['test_error_percent'])}%"
    assert row[6] == ("yes" if config["paper"]["paper_within_ci95"] else "no")

    (stats,) = page.tables_of("suite-statistics")
    assert page.body_rows(stats) == [_suite_stat_cells(s) for s in config["statistics"]]
    (runs,) = page.tables_of("runs")
    assert [r[:3] for r in page.body_rows(runs)] == [[str(x["seed"]), x["job_id"], x["state"]] for x in config["runs"]]

    (img,) = page.images()
    media, data = decode_data_uri(img["src"] or "")
    assert img["data-figure"] == "test_error" and media == "image/png"
    assert data == client.get(f"/v1/suites/{suite_id}/figures/test_error.png", headers=auth(key)).content
    assert client.get(f"/v1/suites/{suite_id}/report.html", headers=auth(other_key)).status_code == 404

    out = tmp_path / "suite.html"
    out.write_text(r.text, encoding="utf-8")
    seen = load_page(out)
    assert seen.scripts == 0 and [(i["figure"], i["complete"]) for i in seen.images] == [("test_error", True)]
    assert (seen.images[0]["width"], seen.images[0]["height"]) == Image.open(io.BytesIO(data)).size
    colours, ink = ink_fraction(seen.screenshot)
    assert colours > 2 and ink > 0.01, (colours, ink)
    assert seen.print_too_wide == []


def test_suite_report_html_before_any_run_ended(idle_client: TestClient, key: str) -> None:
    body = {"specs": [SUITE_TINY], "seeds": 2}
    r = idle_client.post("/v1/suites", json=body, headers=auth(key))
    assert r.status_code == 201, r.text
    page = idle_client.get(f"/v1/suites/{r.json()['id']}/report.html", headers=auth(key))
    assert page.status_code == 200  # as the JSON suite report: answered in every state
    text = parse(page.text).text
    assert "Not complete" in text and "No figures yet" in text and "No SUCCEEDED run yet" in text
    assert idle_client.get("/v1/suites/0123abcd/report.html", headers=auth(key)).status_code == 404
