"""A real browser for the HTML report's tests: Debian's headless Chromium, driven over the DevTools
protocol (a websocket on a port Chromium picks, read from its ``DevToolsActivePort`` file).

``make test`` installs Chromium when it is absent (the Makefile's ``browser`` target); without it the
tests that need it FAIL, they never skip. The page under test has no script: the protocol's
``Runtime.evaluate`` runs in the test's own session, not in the page's code.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.sync.client import ClientConnection, connect

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--mute-audio", "--remote-debugging-port=0")
"""As the machine's own browser check starts it; the networking flags stop it calling out (the machine
has no route out, and its attempts would only slow it down)."""
START_TIMEOUT_S = 60.0
A4_PRINT_WIDTH_PX = round((210 - 2 * 14) / 25.4 * 96)  # 688
CALL_TIMEOUT_S = 60.0


def chromium_path() -> str:
    """Chromium's launcher, or a test failure saying how to get it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed: `make test` installs it (Debian's package `chromium`: "
                    "apt-get install -y chromium); the HTML report's browser test needs it")
    return path


@dataclass
class Loaded:
    """What the browser made of a page: every <img> as loaded, the scripts it found, a screenshot of
    the first screen (PNG) and of each figure, under print media the table of contents' display and
    the tables, figures and preformatted blocks wider than an A4 page's text, and the printed PDF."""

    images: list[dict[str, Any]]
    scripts: int
    title: str
    screenshot: bytes
    figure_shots: dict[str, bytes]
    print_toc_display: str
    print_too_wide: list[str]
    pdf: bytes


class _Session:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            msg = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str) -> dict[str, Any]:
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            msg = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if msg.get("method") == method:
                return msg
            self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise AssertionError(f"evaluate failed: {res['exceptionDetails']}")
        return res["result"].get("value")


def _devtools_port(profile: Path, proc: subprocess.Popen[bytes]) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"chromium exited with {proc.returncode} before it listened")
        if marker.exists():
            lines = marker.read_text().split()
            if lines:
                return int(lines[0])
        time.sleep(0.05)
    raise AssertionError(f"chromium did not write {marker.name} within {START_TIMEOUT_S:.0f} s")


def load_page(path: Path, *, width: int = 1280, height: int = 1800) -> Loaded:
    """Open ``path`` (a saved HTML page) in headless Chromium and report on it (see :class:`Loaded`)."""
    with tempfile.TemporaryDirectory(prefix="glorot-chromium-") as tmp:
        profile = Path(tmp) / "profile"
        scratch = Path(tmp) / "tmp"  # its singleton socket goes under TMPDIR: keep it in what is removed
        scratch.mkdir()
        proc = subprocess.Popen([chromium_path(), *FLAGS, f"--user-data-dir={profile}",
                                 f"--window-size={width},{height}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "TMPDIR": str(scratch)})
        try:
            port = _devtools_port(profile, proc)
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=CALL_TIMEOUT_S).json()
            page = next(t for t in targets if t.get("type") == "page")
            with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=CALL_TIMEOUT_S) as ws:
                return _inspect(_Session(ws), path, width, height)
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop Chromium and every helper it started (its own process group), and wait until none is left.

    The launcher exits before its renderer and utility processes do; one still flushing the profile
    while the temporary directory is removed made the removal fail ("Directory not empty").
    """
    group = proc.pid  # start_new_session: the launcher leads its own group
    _signal_group(group, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        _signal_group(group, signal.SIGKILL)
        proc.wait(10)
    deadline = time.monotonic() + 30
    while _signal_group(group, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_group(group, signal.SIGKILL)


def _signal_group(group: int, sig: int) -> bool:
    """Send ``sig`` to the process group; False when the group has no process left."""
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        return False
    return True


def _inspect(s: _Session, path: Path, width: int, height: int) -> Loaded:
    s.call("Page.enable")
    s.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
    s.call("Page.navigate", url=path.resolve().as_uri())
    s.wait_event("Page.loadEventFired")
    images = s.evaluate("Array.from(document.images, i => ({figure: i.dataset.figure || null, complete: i.complete,"
                        " width: i.naturalWidth, height: i.naturalHeight, scheme: i.src.split(':')[0]}))")
    scripts = s.evaluate("document.scripts.length")
    title = s.evaluate("document.title")
    shot = base64.b64decode(s.call("Page.captureScreenshot", format="png")["data"])
    figure_shots = {}
    for name in [i["figure"] for i in images if i["figure"]]:
        rect = s.evaluate(f"(() => {{ const r = document.querySelector('img[data-figure=\"{name}\"]')"
                          ".getBoundingClientRect(); return {x: r.left + window.scrollX, y: r.top + window.scrollY,"
                          " width: r.width, height: r.height}; })()")
        clip = {**rect, "scale": 1}
        figure_shots[name] = base64.b64decode(
            s.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"])
    s.call("Emulation.setEmulatedMedia", media="print")
    toc = s.evaluate("getComputedStyle(document.querySelector('nav.toc')).display")
    # A4 less the page's 14 mm margins, at 96 px per inch: the width a printed table has
    s.call("Emulation.setDeviceMetricsOverride", width=A4_PRINT_WIDTH_PX, height=height, deviceScaleFactor=1,
           mobile=False)
    too_wide = s.evaluate("Array.from(document.querySelectorAll('table, figure, pre'))"
                          ".filter(e => e.scrollWidth > document.body.clientWidth + 1)"
                          ".map(e => e.tagName + '.' + e.className)")
    pdf = base64.b64decode(s.call("Page.printToPDF", printBackground=False)["data"])
    return Loaded(images, scripts, title, shot, figure_shots, toc, too_wide, pdf)


def ink_fraction(png: bytes) -> tuple[int, float]:
    """(number of distinct colours, fraction of pixels that are not near-white) of a PNG."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 24) or []
    grey = img.convert("L")
    hist = grey.histogram()
    dark = sum(hist[:240])
    return len(colours), dark / (img.width * img.height)
