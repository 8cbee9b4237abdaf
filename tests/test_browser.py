"""The committed site and a browse page in headless Chromium, driven over the DevTools protocol.

Checks that the pages render without console errors or exceptions, that clicking a column
header (a real mouse event at the header's position) reorders the ranked rows, that the
browse page's outcome filter keeps the right number of queries and its thumbnails load, and
saves screenshots (into ``LPR_SCREENSHOT_DIR`` when set, else the test's temporary folder).
Skipped, saying why, where Debian's ``chromium`` is not installed (``.ci/run`` installs it
where apt is available) or ``websocket-client`` (the dev extra) is missing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

websocket = pytest.importorskip("websocket", reason="websocket-client (the dev extra) is not installed")

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium; .ci/run does it)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1400,1000",
]


class Page:
    """One Chromium tab over CDP: commands, console errors and exceptions collected."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id, self.errors, self.events = 0, [], []
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")

    def _record(self, msg: dict) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.errors.append(json.dumps(params["exceptionDetails"])[:500])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(params["entry"].get("text", "") + " " + params["entry"].get("url", ""))
        if method:
            self.events.append(method)

    def call(self, method: str, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._record(msg)

    def pump(self, seconds: float) -> None:
        self.ws.settimeout(0.1)
        end = time.time() + seconds
        while time.time() < end:
            try:
                self._record(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                pass
        self.ws.settimeout(30)

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.pump(0.2)
        if "Page.navigatedWithinDocument" in self.events:  # only the #fragment changed: load the page afresh
            self.events.clear()
            self.call("Page.reload", ignoreCache=True)
        end = time.time() + 30
        while "Page.loadEventFired" not in self.events and time.time() < end:
            self.pump(0.2)
        assert "Page.loadEventFired" in self.events, f"{url} did not load"
        self.pump(0.5)

    def js(self, expr: str):
        res = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise AssertionError(f"{expr}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def click(self, selector: str) -> None:
        """A real left click (mouse pressed + released) at the centre of the element."""
        box = self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)
        self.pump(0.3)

    def screenshot(self, path: Path, full: bool = True) -> Path:
        params = {"format": "png"}
        if full:
            size = self.js(
                "[document.documentElement.scrollWidth, Math.min(document.documentElement.scrollHeight, 6000)]"
            )
            params.update(
                captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
            )
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))
        return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        end = time.time() + 60
        while not port_file.exists() and time.time() < end:
            time.sleep(0.1)
        assert port_file.exists(), "chromium did not start its DevTools endpoint"
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        yield page
        page.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("LPR_SCREENSHOT_DIR")
    out = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _column(page: Page, table: str, col: int) -> list[str]:
    return page.js(
        f"Array.from(document.querySelectorAll('#{table} tbody tr')).map(r => r.cells[{col}].textContent.trim())"
    )


def test_site_renders_and_sorting_by_a_click_reorders_rows(browser, shots):
    site = REPO / "results" / "site" / "index.html"
    browser.open(site.as_uri())  # with no tab named, the page opens on a table with ranked rows
    assert browser.js("document.querySelectorAll('#ranked tbody tr').length") >= 5
    browser.open(site.as_uri() + "#lpr4m-synth__tiny")
    assert browser.js("document.querySelectorAll('#ranked tbody tr').length") >= 10
    browser.screenshot(shots / "site-lpr4m-synth.png")
    ranks = _column(browser, "ranked", 0)
    assert ranks == [str(i + 1) for i in range(len(ranks))]
    r1 = lambda: browser.js(
        "Array.from(document.querySelectorAll('#ranked tbody tr')).map(r => +r.cells[3].dataset.sort)"
    )  # noqa: E731
    before = r1()
    browser.click("#ranked th[data-key='R1']")  # first click on a number: descending (the rank order)
    assert r1() == sorted(before, reverse=True)
    browser.click("#ranked th[data-key='R1']")  # second: ascending
    after = r1()
    assert after == sorted(before) and after != before and _column(browser, "ranked", 0)[0] == ranks[-1]
    assert browser.js("document.querySelector(\"#ranked th[data-key='R1']\").getAttribute('aria-sort')") == "ascending"
    browser.js("window.scrollTo(0, 0)")
    browser.screenshot(shots / "site-lpr4m-synth-sorted.png", full=False)  # R1 ascending: the last rank first
    browser.click("#ranked th[data-key='label']")
    names = _column(browser, "ranked", 1)
    assert names == sorted(names, key=str.lower)
    browser.click("#ranked tbody tr:nth-child(1)")  # a row's provenance panel
    assert "Commit" in browser.js("document.getElementById('details').textContent")
    browser.click("#cmp-run")
    assert "p = " in browser.js("document.getElementById('compare-out').textContent")
    browser.click("nav a[href='#movingfashion-synth__tiny']")  # the tab: a same-document navigation
    assert browser.js("document.querySelector('nav a.active').textContent").startswith("movingfashion-synth")
    mf_ranks = _column(browser, "ranked", 0)  # a tab keeps its own order: this one unsorted, by rank
    assert mf_ranks == [str(i + 1) for i in range(len(mf_ranks))]
    browser.screenshot(shots / "site-movingfashion-synth.png")
    assert browser.errors == []


def test_browse_page_renders_filters_and_loads_its_thumbnails(browser, shots, tmp_path, synth_lpr4m):
    from benchmark.record.submission import write_submission
    from benchmark.reports.browse import filter_counts, write_browser
    from tests.evalkit import make_submission

    paths = []
    for method, noise in (("a-run", 0.5), ("b-run", 2.0)):
        sub = make_submission(
            synth_lpr4m, method=method, noise=noise, dataset="lpr4m-synth", dataset_size="tiny", dataset_seed=0, topk=5
        )
        paths.append(write_submission(sub, tmp_path / "results"))
    index = write_browser(paths[0], tmp_path / "browse", against=paths[1], splits=synth_lpr4m)
    data = json.loads((index.parent / "data.js").read_text()[len("window.LPR_BROWSE = ") : -2])
    counts = filter_counts(data)
    browser.open(index.as_uri())
    assert browser.js("document.querySelectorAll('article.query').length") == len(synth_lpr4m.queries)
    first = (
        "Array.from(document.querySelectorAll('article.query')[0].querySelectorAll('img'))"  # lazy: the visible ones
    )
    assert browser.js(f"{first}.length") >= 3 and browser.js(f"{first}.every(i => i.complete && i.naturalWidth > 0)")
    browser.screenshot(shots / "browse.png")
    browser.js(
        "(() => { const s = document.getElementById('outcome'); s.value = 'a-right-b-wrong';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    assert browser.js("document.querySelectorAll('article.query').length") == counts["a-right-b-wrong"]
    assert browser.js("document.getElementById('count').textContent").startswith(f"{counts['a-right-b-wrong']} of ")
    browser.click("article.query h3 a") if counts["a-right-b-wrong"] else None
    assert browser.errors == []
