"""The web page in headless Chromium (Debian's, driven by playwright): type a query, see thumbnails,
upload an image, filter by modality. The screenshot is kept in test-artifacts/ for a human to look at."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_index import EmojiSearch, emoji_search
from test_server import serve

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update"]


@pytest.fixture(scope="module")
def emoji(tmp_path_factory: pytest.TempPathFactory) -> EmojiSearch:
    return emoji_search(tmp_path_factory)


def test_search_page_in_chromium(emoji: EmojiSearch, artifacts_dir: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # a busy 2-core CI machine encodes the first query slowly

    assert Path(CHROMIUM).exists(), "Debian chromium is missing (scripts/install_system_deps.sh)"
    query_image = tmp_path / "query.png"
    query_image.write_bytes((emoji.manifest.parent / emoji.rows[8]["image"]).read_bytes())
    with serve(emoji.index_dir) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url + "/")
            expect(page.locator("#index-info")).to_contain_text("items")
            expect(page.locator("#modality-filter input[type=checkbox]")).to_have_count(2)

            page.fill("#q", emoji.rows[0]["text"])
            page.click("#search-btn")
            cards = page.locator("#results .result-card")
            expect(cards.first).to_be_visible()
            thumbs = page.locator("#results img.thumb")
            expect(thumbs.first).to_be_visible()
            page.wait_for_function(
                "() => [...document.querySelectorAll('#results img.thumb')].slice(0, 4)"
                ".every(img => img.complete && img.naturalWidth > 0)")
            assert cards.count() >= 10
            expect(page.locator("#status")).to_contain_text("calibrated")
            assert "image" in page.locator("#results .badge").all_inner_texts()
            page.screenshot(path=str(artifacts_dir / "search-page-text-query.png"), full_page=False)

            # only texts: untick "image"
            page.locator("#modality-filter label", has_text="image").locator("input").uncheck()
            expect(page.locator("#results .result-card.kind-image")).to_have_count(0)
            expect(page.locator("#results .result-card.kind-text").first).to_be_visible()
            page.locator("#modality-filter label", has_text="image").locator("input").check()
            expect(page.locator("#results .result-card.kind-image").first).to_be_visible()

            # upload an image: the same emoji comes back first under raw cosine
            page.select_option("#routing", "raw")
            page.set_input_files("#file", str(query_image))
            expect(page.locator("#file-chip")).to_be_visible()
            expect(page.locator("#results .result-card").first).to_have_attribute(
                "data-id", f"{emoji.rows[8]['id']}:image")
            page.wait_for_function(
                "() => [...document.querySelectorAll('#results img.thumb')].slice(0, 4)"
                ".every(img => img.complete && img.naturalWidth > 0)")
            page.screenshot(path=str(artifacts_dir / "search-page-image-query.png"), full_page=False)

            # gibberish: results are shown dimmed with "no confident match", judged by the index's own pairs
            page.select_option("#routing", "calibrated")
            page.click("#file-clear")
            page.fill("#q", "qxv zzkj wqpl")
            page.click("#search-btn")
            expect(page.locator("#no-match")).to_be_visible()
            expect(page.locator("#results .result-card.low-confidence").first).to_be_visible()
            assert "low confidence" in page.locator("#results .result-card.low-confidence .score").first.evaluate(
                "el => getComputedStyle(el, '::after').content")
            assert "calibrated" in page.locator("#results .score").first.inner_text()
            assert "standard deviations" in page.locator("#results .score").first.get_attribute("title")
            page.screenshot(path=str(artifacts_dir / "search-page-no-confident-match.png"), full_page=False)
            page.fill("#q", emoji.rows[0]["text"])  # a name the index holds: confident again
            page.click("#search-btn")
            expect(page.locator("#no-match")).to_be_hidden()

            # a bad request shows the server's message instead of failing silently
            page.eval_on_selector("#k", "el => el.removeAttribute('max')")  # past the browser's own check
            page.fill("#k", "5000")
            page.fill("#q", "cat")
            page.click("#search-btn")
            expect(page.locator("#error")).to_contain_text("at most 1000")
            assert not errors, errors
        finally:
            browser.close()
    assert (artifacts_dir / "search-page-text-query.png").stat().st_size > 10_000
