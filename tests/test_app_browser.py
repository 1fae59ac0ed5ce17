"""The lab in a real headless browser: Playwright drives Debian's chromium against ``python app.py``.

Open the page, choose the offline defaults at their smallest, read the budget readout, start a run,
watch it finish and land on the trade-off plot; start a longer one, reload the page (it re-attaches),
stop it, and see it marked stopped with its adapter saved. Screenshots go to artifacts/screenshots/.

This test fails, rather than skips, without chromium or playwright: the project's setup installs
both (``apt-get install -y chromium``, ``pip install playwright``; never ``playwright install``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM = Path(os.environ.get("SURMLAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SMALL = {"Max train examples": "64", "Max eval examples": "32", "Max length (tokens)": "32", "Batch size": "16"}
TIMEOUT_MS = 120_000

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """``python app.py`` on a free port of 127.0.0.1 over an empty runs folder."""
    root = tmp_path_factory.mktemp("app")
    runs, port = root / "runs", free_port()
    log = (root / "app.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--port", str(port), "--runs-dir", str(runs)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the app did not come up on {url}:\n{(root / 'app.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield url, runs
    proc.terminate()
    proc.wait(timeout=20)
    log.close()
    # Training runs in sessions of its own (it outlives an app restart): end what the test left running.
    queue = runs / ".surmlab-app" / "queue.json"
    current = json.loads(queue.read_text()).get("current") if queue.exists() else None
    if current and current.get("pid"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(current["pid"], signal.SIGKILL)


def browser_tools():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install playwright (its browser download is not needed)")
    return sync_playwright, expect


def test_train_watch_tradeoff_stop_in_a_browser(app):
    sync_playwright, expect = browser_tools()
    url, runs = app
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        try:
            page.goto(url)
            # the offline defaults, at their smallest
            expect(page.get_by_text("trainable parameters").first).to_be_visible()
            for label, value in (("Backbone", "tiny-bert"), ("Task", "rotten-tomatoes"), ("Budget", "1k")):
                box = page.get_by_label(label, exact=True)
                box.click()
                box.fill(value)
                box.press("Enter")
            page.get_by_text("Advanced").click()
            for label, value in SMALL.items():
                page.get_by_label(label, exact=True).fill(value)

            # the header names the whole runs folder
            expect(page.locator("#runs-folder")).to_contain_text(str(runs))

            # a budget circulant cannot meet: refused, with the range; "nearest" trains the closest count
            budget = page.get_by_label("Budget", exact=True)
            budget.fill("90")
            budget.press("Enter")
            expect(page.get_by_text("achievable counts range from 256")).to_be_visible()
            page.locator("#nearest input").check()
            expect(page.get_by_text(re.compile(r"256 method \+ 130 head"))).to_be_visible()
            expect(page.get_by_text("nearest: above the budget")).to_be_visible()
            page.locator("#nearest input").uncheck()
            budget.fill("-5")
            budget.press("Enter")
            expect(page.get_by_text("budget '-5' is negative")).to_be_visible()
            budget.fill("1k")
            budget.press("Enter")

            # the readout: exact count, share of the model, per-layer hyper-parameters, before training
            expect(page.get_by_text("642 trainable parameters")).to_be_visible()
            readout = page.locator(".surm-readout").first.inner_text()
            assert "0.031%" in readout and "block_size=32" in readout
            expect(page.locator("#readout-layers")).to_contain_text("model.encoder.layer.0.attention.self.query")
            page.screenshot(path=SHOTS / "01-readout.png", full_page=True)

            # a small run: progress, then the point on the trade-off plot
            page.get_by_role("button", name="Start", exact=True).click()
            expect(page.get_by_text(re.compile(r"^Started surm-circulant on tiny-bert"))).to_be_visible()
            status = page.locator(".surm-status")
            expect(status).to_have_attribute("data-status", re.compile("starting|running|completed"))
            expect(status).to_have_attribute("data-status", "completed")
            expect(status).to_contain_text("step 4 / 4")
            expect(page.locator("#tradeoff .scatterlayer .point")).to_have_count(1)
            expect(page.locator("#history")).to_contain_text("completed")
            page.screenshot(path=SHOTS / "02-completed.png", full_page=True)

            # a longer run: it re-attaches after a reload, then stops gracefully with its adapter saved
            page.get_by_label("Epochs", exact=True).fill("200")
            page.get_by_role("button", name="Start", exact=True).click()
            expect(status).to_have_attribute("data-status", "running")
            expect(status).to_contain_text(re.compile(r"step [1-9]\d* / 800"))
            page.reload()
            status = page.locator(".surm-status")
            expect(status).to_have_attribute("data-status", "running")
            expect(page.get_by_label("Backbone", exact=True)).to_have_value("tiny-bert")  # the last setup is back
            page.screenshot(path=SHOTS / "03-running-after-reload.png", full_page=True)
            page.get_by_role("button", name="Stop", exact=True).click()
            expect(status).to_have_attribute("data-status", re.compile("stopping|stopped"))
            expect(status).not_to_contain_text("remaining")
            expect(status).to_have_attribute("data-status", "stopped")
            # the stop evaluated once more: the stopped run is on the plot (an open marker) beside the first
            expect(page.locator("#tradeoff .scatterlayer .point")).to_have_count(2)
            expect(status).to_contain_text("adapter saved")
            expect(status).to_contain_text("reason: stop requested")
            history = page.locator("#history")
            expect(history).to_contain_text("stopped")
            history.get_by_text("stopped", exact=True).click()  # pick the run: its adapter is ready to download
            expect(
                page.get_by_text(re.compile(r"Adapter of .*adapter/surm_model.safetensors.*labels.json"))
            ).to_be_visible()
            expect(page.get_by_role("button", name="Download adapter")).to_be_enabled()
            page.screenshot(path=SHOTS / "04-stopped.png", full_page=True)

            # delete asks first: one click deletes nothing, Confirm deletes
            page.get_by_role("button", name="Delete run", exact=True).click()
            expect(page.locator("#run-message")).to_contain_text("press Confirm delete")
            assert len(list(runs.glob("*/summary.json"))) == 2
            page.get_by_role("button", name="Confirm delete", exact=True).click()
            expect(page.locator("#run-message")).to_contain_text("Deleted")
            expect(page.locator("#tradeoff .scatterlayer .point")).to_have_count(1)
        except Exception:
            page.screenshot(path=SHOTS / "failure.png", full_page=True)
            raise
        finally:
            browser.close()
    stopped = [json.loads(p.read_text()) for p in runs.glob("*/summary.json")]
    assert sorted(s["status"] for s in stopped) == ["completed"]  # the stopped one was deleted
    assert all((p.parent / "final" / "surm_model.safetensors").exists() for p in runs.glob("*/summary.json"))


def contrast(fg: str, bg: str) -> float:
    """WCAG contrast ratio of two ``rgb(r, g, b)`` colours."""

    def luminance(colour: str) -> float:
        channels = [int(v) / 255 for v in re.findall(r"\d+", colour)[:3]]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


HINT_COLOURS = """() => [...document.querySelectorAll('*')]
  .filter(e => e.children.length === 0 && e.textContent.startsWith('trainable parameters the method adds'))
  .map(e => [getComputedStyle(e).color, getComputedStyle(e.closest('.block') || document.body).backgroundColor])"""


def test_phone_polish_idle_polling_and_a_study_in_a_browser(app):
    """Hint text at AA contrast; the Mode radios are one labelled group; an idle tab polls rarely; on a
    390 x 844 phone the run table's key columns fit and plot toolbars stay off the titles; the Study
    tab runs a grid and counts its cells to the end, with the summary table and plot."""
    sync_playwright, expect = browser_tools()
    url, _ = app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        try:
            page.goto(url)
            expect(page.get_by_text("trainable parameters").first).to_be_visible()
            (fg, bg), *_ = page.evaluate(HINT_COLOURS)
            assert contrast(fg, bg) >= 4.5, (fg, bg)
            expect(page.get_by_role("radiogroup", name="Mode")).to_have_count(1)

            # the phone: the first four columns of the run table inside the screen; toolbars off titles
            heads = page.locator("#history th")
            expect(heads.first).to_be_visible()
            for i, name in enumerate(["status", "structure", "best", "trainable"]):
                box = heads.nth(i).bounding_box()
                assert name in heads.nth(i).inner_text() and box["x"] + box["width"] <= 390, (name, box)
            for plot in page.locator(".js-plotly-plot").all()[:3]:
                plot.scroll_into_view_if_needed()
                plot.hover()
                title, bar = plot.locator(".gtitle").first, plot.locator(".modebar").first
                if title.count() and bar.count() and bar.is_visible():
                    t, m = title.bounding_box(), bar.bounding_box()
                    overlap = t["x"] < m["x"] + m["width"] and m["x"] < t["x"] + t["width"]
                    overlap &= t["y"] < m["y"] + m["height"] and m["y"] < t["y"] + t["height"]
                    assert not overlap, (t, m)

            # idle: nothing runs, so the page asks the server rarely (it asked about twice a second)
            start = page.evaluate("performance.getEntriesByType('resource').length")
            time.sleep(12)
            asked = page.evaluate("performance.getEntriesByType('resource').length") - start
            assert asked <= 6, asked

            # a study: 2 methods x 1 budget x 2 seeds of 2 steps, progress to the end, table and plot
            page.set_viewport_size({"width": 1400, "height": 1000})
            page.get_by_role("tab", name="Study").click()
            page.get_by_label("Study name", exact=True).fill("browser")
            fields = {"seeds": "0, 1", "max-steps": "2", "max-train": "64", "max-eval": "32"}
            for key, value in fields.items():
                page.locator(f"#study-{key} input, #study-{key} textarea").first.fill(value)
            page.get_by_role("button", name="Start study").click()
            expect(page.locator("#study-message")).to_contain_text("Started study browser: 4 cells")
            progress = page.locator("#study-progress")
            expect(progress).to_contain_text(re.compile(r"of 4 cells"))
            expect(progress).to_contain_text("4 done, 0 failed, 0 running, 0 left of 4 cells")
            expect(progress).to_contain_text("finished")
            expect(page.locator("#study-table")).to_contain_text("surm-circulant")
            expect(page.locator("#study-plot .scatterlayer .trace").first).to_be_attached()
            page.screenshot(path=SHOTS / "05-study.png", full_page=True)
        except Exception:
            page.screenshot(path=SHOTS / "failure-phone-study.png", full_page=True)
            raise
        finally:
            browser.close()
