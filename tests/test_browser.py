"""The studio in a real browser: Debian's Chromium driven by Playwright against 127.0.0.1.

Screenshots of every screen go to test-artifacts/ for a reviewer to look at.
"""

import json
import shutil
from pathlib import Path

import pytest

from studio_server import REPO, StudioServer

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
# Flags for a headless browser on a machine without network: no background services, no
# first-run work, no sandbox (the tests run as root in CI containers).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
LONG = 240_000  # milliseconds: breeding and evaluating on 2 busy cores


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    root = tmp_path_factory.mktemp("studio")
    server = StudioServer(root / "sessions", ARTIFACTS / "studio-server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def plot_data(page, elem_id: str):
    return page.evaluate(f"() => {{ const p = document.querySelector('#{elem_id} .js-plotly-plot'); return p ? JSON.stringify(p.data.map(t => t.z || t.y)) : null; }}")


def open_studio(studio, browser, url_suffix: str = "", width: int = 1280, height: int = 800):
    """Open a page on the studio and wait until the parents check that runs on load fills its report."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(studio.url + url_suffix)
    page.wait_for_function(
        "() => document.querySelector('#compat-table') && document.querySelector('#compat-table').innerText.includes('model type')",
        timeout=LONG,
    )
    return page


def set_mother(page, ref: str) -> None:
    field = page.locator("#mother input")
    field.fill(ref)
    field.press("Enter")


def test_full_flow(studio, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(studio.url)

    # Parents: the tiny family is preselected and the compatibility report appears on load.
    page.wait_for_selector("#compat-table", timeout=LONG)
    page.wait_for_function("() => document.querySelector('#compat-table').innerText.includes('model type')", timeout=LONG)
    assert "compatible" in page.inner_text("#compat-summary")
    page.screenshot(path=str(ARTIFACTS / "1-parents.png"), full_page=True)

    # MRI: both parents' heatmaps render.
    open_tab(page, "2 · MRI")
    for elem_id in ("static-a", "static-b", "probe-a", "probe-b", "ratio-map", "transplant-map"):
        page.wait_for_selector(f"#{elem_id} .js-plotly-plot", timeout=LONG)
    page.screenshot(path=str(ARTIFACTS / "2-mri.png"), full_page=True)

    # Genome: moving a slider changes the live plan without breeding.
    open_tab(page, "3 · Genome")
    page.wait_for_selector("#plan-plot .js-plotly-plot", timeout=LONG)
    before = plot_data(page, "plan-plot")
    slider = page.locator("#gene-global_ratio input[type=number]")
    slider.fill("0.05")
    slider.press("Enter")
    page.wait_for_function(
        "(before) => { const p = document.querySelector('#plan-plot .js-plotly-plot'); return p && JSON.stringify(p.data.map(t => t.z || t.y)) !== before; }",
        arg=before, timeout=LONG,
    )
    page.screenshot(path=str(ARTIFACTS / "3-genome.png"), full_page=True)

    # Breed and evaluate: the eval table, the health verdict and its plot.
    open_tab(page, "4 · Breed & evaluate")
    page.click("#breed-button")
    page.wait_for_function("() => document.querySelector('#eval-table').innerText.includes('child')", timeout=LONG)
    page.wait_for_function("() => document.querySelector('#health-verdict').innerText.includes('Health:')", timeout=LONG)
    page.wait_for_selector("#health-plot .js-plotly-plot", timeout=LONG)
    assert "p-value" in page.inner_text("#eval-table")

    # Chat: one prompt, three answers.
    page.fill("#chat-prompt textarea", "12+34=")
    page.click("#chat-send")
    for elem_id in ("answer-father", "answer-mother", "answer-child"):
        page.wait_for_function(f"() => document.querySelector('#{elem_id} textarea').value.length > 0", timeout=LONG)
    page.screenshot(path=str(ARTIFACTS / "4-breed.png"), full_page=True)

    # Save: the child's files land in the folder typed by the user.
    open_tab(page, "6 · Save & publish")
    target = tmp_path / "saved-child"
    page.fill("#save-path textarea", str(target))
    page.click("#save-button")
    page.wait_for_function("() => document.querySelector('#save-status').innerText.includes('Saved to')", timeout=LONG)
    for name in ("config.json", "model.safetensors", "darwin.json", "README.md", "tokenizer.json"):
        assert (target / name).is_file(), name
    assert "evolutionary-merge" in page.inner_text("#card-preview") or (target / "README.md").read_text().count("darwin") > 0
    page.screenshot(path=str(ARTIFACTS / "6-save.png"), full_page=True)

    # Family tree.
    open_tab(page, "7 · Family tree")
    page.click("#tree-button")
    page.wait_for_selector("#tree-plot .js-plotly-plot", timeout=LONG)
    page.screenshot(path=str(ARTIFACTS / "7-tree.png"), full_page=True)

    # Next generation: the child becomes the father, the new pair is checked, and the next child
    # is its offspring.
    page.click("#next-generation")
    page.wait_for_function("() => document.querySelector('#father input').value.includes('child-1')", timeout=LONG)
    page.wait_for_function("() => document.querySelector('#compat-summary').innerText.includes('compatible: every tensor')", timeout=LONG)
    open_tab(page, "4 · Breed & evaluate")
    page.click("#breed-button")
    page.wait_for_function("() => document.querySelector('#breed-status').innerText.includes('child-2')", timeout=LONG)
    assert "child-1" in page.inner_text("#card-preview")

    open_tab(page, "5 · Evolve")
    page.wait_for_selector("#evolve-button")
    page.screenshot(path=str(ARTIFACTS / "5-evolve.png"), full_page=True)
    page.close()


def test_phone_width_and_dark_theme(studio, browser):
    phone = open_studio(studio, browser, width=390, height=844)
    width = phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390 + 20, f"page is {width} px wide on a 390 px screen"
    phone.screenshot(path=str(ARTIFACTS / "phone.png"), full_page=True)
    phone.close()

    dark = open_studio(studio, browser, url_suffix="/?__theme=dark")
    background = dark.evaluate("() => getComputedStyle(document.querySelector('gradio-app') || document.body).backgroundColor")
    text_color = dark.evaluate("() => getComputedStyle(document.querySelector('#compat-summary')).color")
    assert background != text_color
    dark.screenshot(path=str(ARTIFACTS / "dark.png"), full_page=True)
    dark.close()


def test_user_mistake_shows_message(studio, browser):
    page = open_studio(studio, browser)
    set_mother(page, "embedded:no-such-model")
    page.click("#check-parents")
    error = page.get_by_text("unknown embedded model 'no-such-model'")
    error.first.wait_for(timeout=LONG)
    assert "Traceback" not in page.content()
    # The report of the earlier, good parents is cleared, so it cannot pass for these.
    page.wait_for_function("() => document.querySelector('#compat-summary').innerText.includes('Not checked')", timeout=LONG)
    assert "compatible" not in page.inner_text("#compat-summary")
    page.screenshot(path=str(ARTIFACTS / "error-message.png"), full_page=True)
    page.close()


def test_edited_parents_need_check(studio, browser):
    page = open_studio(studio, browser)
    set_mother(page, "embedded:tiny-base")
    page.wait_for_function("() => document.querySelector('#compat-summary').innerText.includes('Not checked')", timeout=LONG)
    open_tab(page, "4 · Breed & evaluate")
    page.click("#breed-button")
    page.get_by_text("Check the parents on the Parents tab first").first.wait_for(timeout=LONG)
    page.close()


def wait_for_text(page, elem_id: str, text: str) -> None:
    page.wait_for_function(
        "([id, text]) => { const e = document.querySelector('#' + id); return e && e.innerText.includes(text); }",
        arg=[elem_id, text], timeout=LONG,
    )


def set_number(page, elem_id: str, value: str) -> None:
    field = page.locator(f"#{elem_id} input[type=number]")
    field.fill(value)
    field.press("Enter")


def test_genome_export_current_sliders(studio, browser):
    page = open_studio(studio, browser)
    open_tab(page, "3 · Genome")
    for value in ("0.3", "0.7"):
        set_number(page, "gene-global_ratio", value)
        page.click("#export-button")
        link = page.locator("#export-file a[download]").first
        link.wait_for(timeout=LONG)
        with page.expect_download(timeout=LONG) as download:
            link.click()
        exported = json.loads(Path(download.value.path()).read_text())
        assert exported["global_ratio"] == float(value)
    page.close()


def test_evolve_cancel_and_resume(studio, browser):
    page = open_studio(studio, browser)
    open_tab(page, "5 · Evolve")
    page.click("#evolve-cancel")
    wait_for_text(page, "evolve-cancel-note", "Nothing is running")
    page.click("#resume-button")
    page.get_by_text("Nothing to resume in this session yet").first.wait_for(timeout=LONG)

    # A long search, cancelled after its first generation: the best genome so far is bred.
    set_number(page, "evolve-population", "4")
    set_number(page, "evolve-generations", "40")
    page.click("#evolve-button")
    wait_for_text(page, "evolve-status", "Generation 1 of 40")
    page.click("#evolve-cancel")
    wait_for_text(page, "evolve-status", "Search cancelled after")
    assert page.inner_text("#evolve-cancel-note").strip() == ""
    cancelled_after = int(page.inner_text("#evolve-status").split("after ")[1].split(" ")[0])
    page.screenshot(path=str(ARTIFACTS / "5-evolve-cancelled.png"), full_page=True)

    # Resume continues that run from its finished generations, here for one more generation.
    finished = cancelled_after // 4 * 4
    set_number(page, "evolve-candidate-budget", str(finished + 4))
    page.click("#resume-button")
    wait_for_text(page, "evolve-status", f"Search stopped by the candidate budget after {finished + 4} candidates")
    page.screenshot(path=str(ARTIFACTS / "5-evolve-resumed.png"), full_page=True)
    page.close()
