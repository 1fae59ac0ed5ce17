"""A student's own data in a real headless browser (Debian's chromium, as ``test_app_browser.py``):
upload a ``review,sentiment`` CSV, pick its columns, preview it, train a tiny run on it, see it on the
trade-off plot, try a sentence, export the run, and read the command behind the form."""

from __future__ import annotations

import re
import zipfile

import pytest
from test_app_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SHOTS,
    TIMEOUT_MS,
    app,  # noqa: F401  (the fixture: the app over an empty runs folder)
    browser_tools,
)

pytestmark = pytest.mark.slow
ROWS = "".join(f"a great film {i},pos\nan awful film {i},neg\n" for i in range(20))


def pick(page, selector: str, value: str) -> None:
    """Choose ``value`` in the Gradio dropdown ``selector`` (type to filter, take the first option)."""
    box = page.locator(f"{selector} input").first
    box.click()
    box.fill(value)
    page.get_by_role("option", name=re.compile(re.escape(value))).first.click()


def test_own_data_train_try_export_command_in_a_browser(app, tmp_path):  # noqa: F811
    sync_playwright, expect = browser_tools()
    url, runs = app
    SHOTS.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "reviews.csv"
    data.write_text("review,sentiment\n" + ROWS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        try:
            page.goto(url)
            expect(page.get_by_text("trainable parameters").first).to_be_visible()  # Train comes first

            # Data: upload, pick the columns, preview, hand it to the form
            page.get_by_role("tab", name="Data").click()
            page.locator("#data-file input[type=file]").set_input_files(str(data))
            expect(page.locator("#data-message")).to_contain_text("Kept reviews.csv")
            pick(page, "#data-text", "review")
            pick(page, "#data-label", "sentiment")
            page.get_by_role("button", name="Preview", exact=True).click()
            expect(page.locator("#data-summary")).to_contain_text("32 train / 8 eval examples")
            expect(page.locator("#data-rows")).to_contain_text("a great film 0")
            expect(page.locator("#data-counts")).to_contain_text("pos")
            page.screenshot(path=SHOTS / "10-data-preview.png", full_page=True)
            page.get_by_role("button", name="Use for training", exact=True).click()
            expect(page.locator("#data-summary")).to_contain_text("The Train tab now trains on")
            kept = runs / ".surmlab-app" / "uploads" / "reviews.csv"
            assert kept.read_text() == data.read_text()

            # Train: the form holds the upload and its columns; a tiny run on it
            page.get_by_role("tab", name="Train").click()
            expect(page.get_by_label("Task", exact=True)).to_have_value(f"csv:{kept}")
            page.get_by_text("Advanced").click()
            expect(page.get_by_label("Text column", exact=True)).to_have_value("review")
            expect(page.get_by_label("Label column", exact=True)).to_have_value("sentiment")
            for label, value in (("Backbone", "tiny-bert"), ("Budget", "1k")):
                box = page.get_by_label(label, exact=True)
                box.click()
                box.fill(value)
                box.press("Enter")
            expect(page.get_by_text("642 trainable parameters")).to_be_visible()
            page.get_by_role("button", name="Start", exact=True).click()
            status = page.locator(".surm-status")
            expect(status).to_have_attribute("data-status", "completed")
            expect(page.locator("#tradeoff .scatterlayer .point")).to_have_count(1)

            # Command: the line behind the form names the columns
            page.get_by_role("tab", name="Command").click()
            page.get_by_role("button", name="Show the command for the form").click()
            expect(page.locator("#command-line")).to_contain_text("--text-column review --label-column sentiment")

            # Try it: a sentence, every class with its probability; then export
            page.get_by_role("tab", name="Try it / Evaluate / Export").click()
            pick(page, "#use-run", "tiny-bert")
            page.get_by_label("Text to classify", exact=True).fill("a great film")
            page.get_by_role("button", name="Predict", exact=True).click()
            expect(page.locator("#try-message")).to_contain_text("final weights of")
            expect(page.locator("#try-label")).to_contain_text("pos")
            expect(page.locator("#try-label")).to_contain_text("neg")
            page.get_by_role("button", name="Export", exact=True).click()
            expect(page.locator("#export-message")).to_contain_text("merged/model.safetensors")
            page.screenshot(path=SHOTS / "11-try-export.png", full_page=True)
            with page.expect_download() as download:
                page.locator("#export-download").click()
            archive = tmp_path / "export.zip"
            download.value.save_as(archive)
            names = zipfile.ZipFile(archive).namelist()
            assert {
                "labels.json",
                "run_config.json",
                "adapter/surm_model.safetensors",
                "lora/adapter_model.safetensors",
            } <= set(names)
        except Exception:
            page.screenshot(path=SHOTS / "data-failure.png", full_page=True)
            raise
        finally:
            browser.close()
