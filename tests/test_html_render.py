"""The HTML report (glorot_core.report_html) read back as a reader would: every number in its per-layer
tables, theory table and verdicts is the report's; the figures are the report's figures, embedded; a
spec's name or a verdict's text is shown as text, never run as markup; the page fetches nothing and has
no script; what a report lacks (a snapshot, an instrument's section, the theory) is said, not an error.

Numbers are shown with 4 significant digits (``view.number_text``): a shown value is within a relative
5e-4 of the report's (half a unit in the 4th digit, over a leading digit ≥ 1); percentages with one
decimal, within 5e-4 absolute as fractions.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from html_parse import cell_number, decode_data_uri, is_image, parse

from glorot_core import figures, report_html
from glorot_core.report_html import view
from glorot_core.runner import run_experiment
from glorot_core.spec import validate_spec

REL = 5e-4  # 4 significant digits (module docstring)
PCT_ABS = 5e-4  # one decimal of a percentage
TINY_SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>'


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """A small trained tanh run with every instrument: 3 snapshots (steps 0, 10, 20), Jacobians on 2 examples."""
    spec = validate_spec({
        "name": "html", "device": "cpu", "model": {"hidden": [16, 16, 16], "activation": "tanh"},
        "train": {"steps": 20}, "data": {"test_examples": 100},
        "diagnostics": {"every": 10, "monitor_examples": 40, "jacobian": {"examples": 2}},
    })
    return json.loads(json.dumps(run_experiment(spec)))  # as read back from a file or the API


def _stub_draw(name: str, fmt: str) -> bytes:
    """A tiny valid SVG for every figure: for the tests whose subject is not the figures (drawing them all
    takes seconds)."""
    return TINY_SVG


def _close(shown: Any, value: Any, percent: bool = False) -> bool:
    if value is None:
        return shown is None
    if isinstance(value, str):  # the report's non-finite numbers
        return shown is None or math.isnan(shown) or math.isinf(shown)
    if percent:
        return abs(shown - value) <= PCT_ABS
    return math.isclose(shown, value, rel_tol=REL, abs_tol=0.0)


def test_number_text_rounds_and_keeps_missing_and_non_finite_visible() -> None:
    assert view.number_text(None) == "—"
    assert view.number_text(16) == "16"
    assert view.number_text(0.123456) == "0.1235"
    assert view.number_text(1.2e-05) == "1.2e-05"
    assert view.number_text(0.25, percent=True) == "25.0%"
    assert view.number_text(float("nan")) == "NaN" and view.number_text(float("-inf")) == "-Infinity"
    assert view.number_text("Infinity") == "Infinity"  # the report's own spelling of a non-finite number
    assert view.number_text([0.5, 2]) == "0.5, 2"
    assert view.number_text(True) == "yes"


def test_layer_tables_show_the_reports_numbers_at_init_and_at_the_end(report: dict[str, Any]) -> None:
    page = parse(report_html.render_report(report, draw=_stub_draw))
    tables = page.tables_of("layers")
    snaps = report["snapshots"]
    assert [t.attrs["data-step"] for t in tables] == [str(snaps[0]["step"]), str(snaps[-1]["step"])] == ["0", "20"]
    header = tables[0].rows[0]
    assert header == ["layer", "units", *[c.header for c in view.LAYER_COLUMNS]]
    for table, snap in zip(tables, (snaps[0], snaps[-1]), strict=True):
        rows = page.body_rows(table)
        assert len(rows) == len(report["layers"]) == 3
        for row, layer, described in zip(rows, snap["layers"], report["layers"], strict=True):
            assert row[0] == f"{layer['index']} {layer['name']}" and row[1] == str(described["units"])
            for text, col in zip(row[2:], view.LAYER_COLUMNS, strict=True):
                block = layer[col.section]
                value = None if block is None else block[col.key]
                assert text == view.number_text(value, percent=col.percent)
                assert _close(cell_number(text), value, col.percent), (col, text, value)
    # The last hidden layer has no J^i (there is no z_{i+1} to map to): shown as missing, not as a number.
    assert page.body_rows(tables[0])[-1][-1] == "—"


def test_theory_table_is_predicted_beside_measured_with_their_ratio(report: dict[str, Any]) -> None:
    page = parse(report_html.render_report(report, draw=_stub_draw))
    (variances,) = page.tables_of("theory-variances")
    (depth,) = page.tables_of("theory-depth")
    at_init = report["theory"]["at_init"]
    assert len(page.body_rows(variances)) == len(page.body_rows(depth)) == len(at_init) == 3
    for row, row2, th in zip(page.body_rows(variances), page.body_rows(depth), at_init, strict=True):
        assert row[0] == row2[0] == f"{th['index']} hidden{th['index']}"
        shown = [cell_number(t) for t in row[1:]]
        for k, what in enumerate(("activation_var", "backprop_var", "weight_grad_var")):
            pred, meas, ratio = shown[3 * k: 3 * k + 3]
            p, m = th[f"predicted_{what}"], th[f"measured_{what}"]
            assert _close(pred, p) and _close(meas, m), (what, row)
            assert _close(ratio, p / m), (what, ratio, p / m)
        # eq. 7's ratio the page computes is the one the report states
        assert math.isclose(th["predicted_weight_grad_var"] / th["measured_weight_grad_var"],
                            th["weight_grad_var_predicted_over_measured"], rel_tol=1e-12)
        shown = [cell_number(t) for t in row2[1:]]
        assert _close(shown[0], th["predicted_weight_grad_var_ratio_to_layer1"])
        assert _close(shown[1], th["weight_grad_var_ratio_to_layer1"])
        assert _close(shown[2], th["chi"]) and _close(shown[3], th["depth_scale"])
    assert page.body_rows(depth)[0][1:3] == ["1", "1"]  # layer 1's ratio to itself


def test_every_verdict_is_shown_with_its_numbers(report: dict[str, Any]) -> None:
    assert report["verdicts"], "the tiny standard-init tanh run should be flagged (its J^i contract)"
    page = parse(report_html.render_report(report, draw=_stub_draw))
    (table,) = page.tables_of("verdicts")
    rows = page.body_rows(table)
    assert len(rows) == len(report["verdicts"])
    for row, v in zip(rows, report["verdicts"], strict=True):
        assert row[0] == v["severity"] and row[1] == v["code"] and row[4] == v["message"]
        assert row[2] == view.number_text(v["layer"]) and row[3] == view.number_text(v["step"])
        for key, value in v["values"].items():
            assert f"{key} = {view.number_text(value)}" in row[5]


def test_figures_are_the_reports_figures_embedded(report: dict[str, Any]) -> None:
    """SVG, the default (the service's test embeds PNGs and compares them with its figure routes')."""
    page = parse(report_html.render_report(report))
    images = page.images()
    assert [i["data-figure"] for i in images] == [d.name for d in figures.available(report)]
    for img in images:
        media, data = decode_data_uri(img["src"] or "")
        assert media == "image/svg+xml" and is_image(media, data)
        assert data == figures.render(report, img["data-figure"], "svg")  # the figure itself, not a lookalike
        assert img["alt"]


def test_the_page_is_self_contained_and_has_no_script(report: dict[str, Any]) -> None:
    html = report_html.render_report(report, draw=_stub_draw)
    page = parse(html)
    assert not [t for t, _ in page.tags if t in ("script", "iframe", "object", "embed", "link", "base", "form")]
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            if attrs.get(name) is not None:
                assert attrs[name].startswith(("data:", "#")), (tag, attrs)
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)  # no inline handlers
    (csp,) = [a for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp["content"] == report_html.CONTENT_SECURITY_POLICY and "default-src 'none'" in csp["content"]
    assert "@media print" in html  # print styles
    assert json.loads(page.pre[0]) == report["spec"]  # the spec, pretty-printed, reads back as itself


def test_text_from_the_spec_and_verdicts_is_escaped(report: dict[str, Any]) -> None:
    hostile = copy.deepcopy(report)
    name = '<script>alert("x")</script><img src=x onerror=alert(1)> & "q"'
    hostile["spec"]["name"] = name
    hostile["verdicts"][0]["message"] = "</td></tr></table><script>alert(2)</script>"
    hostile["verdicts"][0]["values"] = {"<b>k</b>": "<i>v</i>"}
    html = report_html.render_report(hostile, draw=_stub_draw, job={"id": "<job>", "kind": "<k>"})
    page = parse(html)
    assert "<script" not in html.lower() and "<img src=x" not in html and "<b>" not in html
    assert not [t for t, _ in page.tags if t in ("script", "b", "i")]
    assert all((a.get("src") or "").startswith("data:") for a in page.images())
    assert name in page.text and "</td></tr></table><script>alert(2)</script>" in page.text
    assert "<b>k</b> = <i>v</i>" in page.text and "<job>" in page.text
    assert html.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") == 2  # <title> and <h1>
    assert len(page.tables_of("verdicts")[0].rows) == 1 + len(report["verdicts"])  # the table's shape held


def test_what_a_report_lacks_is_said(report: dict[str, Any]) -> None:
    partial = copy.deepcopy(report)
    partial["snapshots"] = partial["snapshots"][:1]
    partial["snapshots"][0]["layers"][0]["jacobian"] = None  # an instrument that did not run there
    partial["theory"] = {"equations": "eqs 5-7", "at_init": [None, None, None]}
    partial["verdicts"] = []
    page = parse(report_html.render_report(partial, draw=_stub_draw))
    (table,) = page.tables_of("layers")
    assert "the only snapshot" in page.text
    assert page.body_rows(table)[0][-1] == "—"
    assert not page.tables_of("theory") and "no theory section" in page.text
    assert not page.tables_of("verdicts") and "No verdicts" in page.text


def test_theory_outside_its_assumptions_says_so(report: dict[str, Any]) -> None:
    relu = copy.deepcopy(report)
    for row in relu["theory"]["at_init"]:
        row["applies"] = False
    page = parse(report_html.render_report(relu, draw=_stub_draw))
    assert "predictions do not apply" in page.text
    ok = parse(report_html.render_report(report, draw=_stub_draw))
    assert "predictions do not apply" not in ok.text


def test_an_unknown_figure_format_is_refused(report: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="figure format"):
        report_html.render_report(report, fmt="gif", draw=_stub_draw)


# -------------------------------------------------------------------------------------------- suites


def _suite_report() -> dict[str, Any]:
    """A suite report (glorot.suite-report/1) still running: one seed SUCCEEDED (no std, no interval),
    one FAILED with an error that is markup, a label that is markup, no Table 1 value."""
    one = {"n": 1, "missing": 0, "std": None, "ci95": None, "half_width": None, "t": None, "confidence": 0.95}
    return {
        "schema": "glorot.suite-report/1", "suite_id": "5e11e", "state": "RUNNING", "complete": False,
        "confidence": 0.95, "statistics_at": "each run's last snapshot",
        "configs": [{
            "index": 0, "label": "<i>cfg</i>", "preset": None, "budget": None, "seeds": [3, 4, 5],
            "runs": [{"job_id": "a1", "seed": 3, "state": "SUCCEEDED"},
                     {"job_id": "a2", "seed": 4, "state": "FAILED", "error": "<script>boom</script>"},
                     {"job_id": "a3", "seed": 5, "state": "RUNNING"}],
            "n_succeeded": 1, "paper": None,
            "statistics": [
                {"statistic": "test_error", "layer": 0, "mean": 0.25,
                 "values": [{"seed": 3, "job_id": "a1", "step": 20, "value": 0.25}], **one},
                {"statistic": "activation.std", "layer": 2, "mean": 0.125,
                 "values": [{"seed": 3, "job_id": "a1", "step": 20, "value": 0.125}], **one},
            ],
        }],
        "failed": [{"job_id": "a2", "config_index": 0, "seed": 4, "error": "<script>boom</script>"}],
    }


def test_suite_page_shows_the_reports_numbers_and_what_is_missing() -> None:
    fig = report_html.embed("test_error", "Figs 11, 12", "Test error", TINY_SVG, "svg")
    html = report_html.render_suite_report(_suite_report(), figures=[fig])
    page = parse(html)
    assert "<script" not in html.lower() and "<i>" not in html
    assert "Not complete" in page.text and "<script>boom</script>" in page.text and "<i>cfg</i>" in page.text
    (overview,) = page.tables_of("suite-overview")
    assert page.body_rows(overview) == [["<i>cfg</i>", "1 / 3", "25.0%", "—", "—", "—", "—"]]
    (stats,) = page.tables_of("suite-statistics")
    assert page.body_rows(stats) == [["test_error", "network", "1", "0", "25.0%", "—", "—", "3: 25.0%"],
                                     ["activation.std", "2", "1", "0", "0.125", "—", "—", "3: 0.125"]]
    (img,) = page.images()
    assert decode_data_uri(img["src"] or "") == ("image/svg+xml", TINY_SVG)
    assert not [t for t, _ in page.tags if t == "script"]


def test_suite_page_with_an_interval_and_the_papers_value() -> None:
    report = _suite_report()
    config = report["configs"][0]
    config["statistics"][0].update({"n": 3, "std": 0.05, "ci95": [0.125, 0.375]})
    config["paper"] = {"test_error_percent": 27.15, "test_error": 0.2715, "paper_within_ci95": True}
    report["complete"] = True
    page = parse(report_html.render_suite_report(report))
    (overview,) = page.tables_of("suite-overview")
    assert page.body_rows(overview)[0][2:] == ["25.0%", "5.0%", "[12.5%, 37.5%]", "27.15%", "yes"]
    assert "Not complete" not in page.text and "No figures yet" in page.text
