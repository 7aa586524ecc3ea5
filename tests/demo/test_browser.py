"""A real browser (Debian's Chromium through Playwright) uses the page like a person:
upload, type tags, submit, read the tags, see the heat maps. Saves docs/screenshot.png.

Every request to another host is blocked and recorded: the page must work offline.
Skips when Chromium is missing here; in CI (CI=true) a missing browser fails.
"""
from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

from demo.app import EXAMPLE_TAGS, EXAMPLES_DIR
from tests.conftest import IN_CI, ROOT

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "docs" / "screenshot.png"
SCREENSHOT_WIDTH = 1000
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.browser
#: Eleven typed tags for ten places: at least one must land outside the top 10.
MANY_TAGS = ("espresso", "latte art", "saucer", "pagoda", "skyscraper", "glacier", "tractor", "volcano", "iceberg",
             "submarine", "snowmobile")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def save_small_png(png: bytes, path: Path, width: int = SCREENSHOT_WIDTH) -> Path:
    """Downscale a screenshot and save it as a small palette PNG."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def test_upload_type_tags_and_see_tags_and_heat_maps(browser, default_server):
    local = urlparse(default_server.url).hostname
    foreign: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)

    def offline(route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in (local, "localhost", "127.0.0.1"):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()
    page.route("**/*", offline)

    page.goto(default_server.url)
    page.locator("#sdl-photo input[type=file]").set_input_files(str(EXAMPLES_DIR / "coffee.jpg"))
    page.locator("#sdl-tags-input textarea").fill("espresso, latte art, saucer")
    page.locator("#sdl-run").click()
    table = page.locator("#sdl-table table.sdl-tags")
    table.wait_for(state="visible")
    k = default_server.app.tagger_cache.get().config.k
    maps = page.locator("#sdl-maps img")
    maps.first.wait_for(state="visible")
    page.wait_for_function("n => document.querySelectorAll('#sdl-maps img').length >= n", arg=k)
    page.locator("#sdl-tag-maps img").first.wait_for(state="visible")

    text = table.inner_text()
    assert "espresso" in text and "score" in text
    assert page.locator("#sdl-table .sdl-badge.typed").count() >= 1
    unseen = page.locator("#sdl-table tr.unseen td.tag")
    assert unseen.count() >= 1 and unseen.first.inner_text().startswith("*")
    captions = page.locator("#sdl-maps").inner_text()
    assert "k=0 · wins" in captions
    assert maps.count() == k
    save_small_png(page.screenshot(full_page=True), SCREENSHOT)

    # choosing another tag shows that tag's K maps (from the kept result, no new forward pass)
    second = page.evaluate("() => document.querySelectorAll('#sdl-table td.tag')[1].firstChild.textContent")
    page.locator("#sdl-tag-choice input").click()
    page.get_by_role("option", name=second, exact=True).click()
    page.wait_for_function("t => document.querySelector('#sdl-tag-maps').innerText.includes('k=0 · ' + t)",
                           arg=second)
    assert page.locator("#sdl-tag-maps img").count() == k

    # more typed tags than places: those outside the top-k follow the table, with their ranks
    page.locator("#sdl-tags-input textarea").fill(", ".join(MANY_TAGS))
    page.locator("#sdl-run").click()
    outside = page.locator("#sdl-table table.sdl-outside")
    outside.wait_for(state="visible")
    assert "Your tags outside the top 10" in page.locator("#sdl-table .sdl-outside-title").inner_text()
    rows = outside.locator("tbody tr")
    assert rows.count() >= len(MANY_TAGS) - 10
    for i in range(rows.count()):
        rank, tag = rows.nth(i).locator("td").nth(0).inner_text(), rows.nth(i).locator("td.tag").inner_text()
        assert rank.startswith("#") and int(rank[1:]) > 10
        assert tag.split("typed")[0].replace("unseen", "").strip().strip("*") in MANY_TAGS
        assert rows.nth(i).locator(".sdl-badge.typed").count() == 1

    page.locator("#sdl-only input").check()
    page.locator("#sdl-tags-input textarea").fill("<i>xss</i>, espresso")
    page.locator("#sdl-run").click()
    page.wait_for_function("() => document.querySelector('#sdl-table').innerText.includes('<i>xss</i>')")
    assert page.locator("#sdl-table td.tag i").count() == 0
    assert page.locator("#sdl-table tr").count() == 3  # header + the two typed tags

    # clicking an example photo fills the inputs and tags it
    before = table.inner_text()
    page.locator("#sdl-only input").uncheck()
    page.get_by_text(EXAMPLE_TAGS["chelsea"], exact=True).click()
    page.wait_for_function("t => { const x = document.querySelector('#sdl-table table'); "
                           "return x && x.innerText !== t && x.querySelectorAll('tbody tr').length === 10; }",
                           arg=before)
    assert page.locator("#sdl-tags-input textarea").input_value() == EXAMPLE_TAGS["chelsea"]

    # the about panel, filled when the page opened (the model loads after the page is served)
    page.get_by_text("About this model", exact=True).first.click()
    page.wait_for_function("() => (document.querySelector('#sdl-about')?.innerText || '')"
                           ".includes('Measured quality')")
    assert "Loading the model" not in page.locator("#sdl-about").inner_text()
    assert foreign == [], f"the page tried to reach other hosts: {foreign[:5]}"
    page.close()
    shot = Image.open(SCREENSHOT)
    assert shot.width == SCREENSHOT_WIDTH and SCREENSHOT.stat().st_size < 600_000
