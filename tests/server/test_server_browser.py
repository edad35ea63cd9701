"""The page of `movierec serve` in a real browser: headless Chromium (Debian's chromium and chromium-driver) driven
by selenium searches, rates three movies and gets ten recommendations, on a desktop and a phone-sized window; titles
holding HTML stay text. Screenshots go to pytest's tmp_path, and to $MOVIEREC_TEST_ARTIFACTS when it is set."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import isolated_home
from servers import Server
from synthetic import ml100k_archive
from test_server import TINY
from typer.testing import CliRunner

from movierec.cli import app

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = "MOVIEREC_TEST_ARTIFACTS"
WAIT = 30  # seconds for the page to show what it should (two cores shared with other work)


def _why_no_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium; it comes with movierec[dev])"
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        return (f"{' and '.join(missing)} not found: install Debian's browser with "
                "apt-get install chromium chromium-driver (.ci/run does)")
    return None


pytestmark = pytest.mark.skipif(_why_no_browser() is not None, reason=_why_no_browser() or "")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    assert driver.save_screenshot(str(path)), "the browser saved no screenshot"
    where = os.environ.get(ARTIFACTS, "").strip()
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(where) / name)
    return path


def wait_for(driver, condition, what: str):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page redraws its lists as answers arrive: an element read mid-redraw is stale, and is looked up again.
    return WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: condition(d), message=f"the page never showed {what}")


def find_all(driver, css: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def click(driver, find, what: str) -> None:
    """Click the element ``find(driver)`` returns, once it does (found again if the page redrew it meanwhile)."""
    def attempt(d) -> bool:
        element = find(d)
        if element is None:
            return False
        element.click()
        return True

    wait_for(driver, attempt, what)


def rate(driver, query: str, title: str, stars: int) -> None:
    """Type ``query`` in the search box, pick ``title`` from the suggestions and give it ``stars``."""
    box = find_all(driver, "#search")[0]
    box.clear()
    box.send_keys(query)
    click(driver, lambda d: next((b for b in find_all(d, "#suggestions button.suggestion")
                                  if b.text.split("\n")[0] == title), None), f"{title!r} suggested")
    click(driver, lambda d: next((b for b in find_all(d, "#rated li .stars button.star")
                                  if b.get_attribute("data-stars") == str(stars)
                                  and b.find_element("xpath", "../..").text.startswith(title)), None),
          f"stars for {title!r}")


def recommendations(driver, count: int) -> list[str]:
    """The recommendations' titles as listed ("1. Title"), once there are ``count`` of them."""
    def titles(d) -> list[str] | None:
        shown = [r.find_element("css selector", ".title").text for r in find_all(d, "#recs li.rec")]
        return shown if len(shown) == count else None

    return wait_for(driver, titles, f"{count} recommendations")


# -- ml-100k ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(trained_home) -> Iterator[Server]:
    train = ["train", *TINY["als"], "--device", "cpu", "--name", "als", "--json"]
    with isolated_home(trained_home(train)):
        s = Server("--model", "als")
        try:
            yield s
        finally:
            s.kill()


def test_search_rate_three_movies_and_see_ten_recommendations(browser, server, tmp_path):
    browser.set_window_size(1280, 900)
    browser.get(server.url)
    wait_for(browser, lambda d: "Model als" in find_all(d, "#model")[0].text, "the model's name")
    rate(browser, "Star Wars", "Star Wars (1977)", 5)
    assert "Star Wars (1977)" not in [t.split(". ", 1)[1] for t in recommendations(browser, 10)]
    rate(browser, "toy sto", "Toy Story (1995)", 4)
    rate(browser, "Fargo", "Fargo (1996)", 5)
    wait_for(browser, lambda d: any("Fargo (1996)" in r.text for r in find_all(d, "#recs .because")),
             "a recommendation because of the last rating")
    titles = recommendations(browser, 10)
    assert all(t.split(". ", 1)[1] for t in titles) and [t.split(".")[0] for t in titles] == [str(i)
                                                                                               for i in range(1, 11)]
    rated = {"Star Wars (1977)", "Toy Story (1995)", "Fargo (1996)"}
    assert not rated & {t.split(". ", 1)[1] for t in titles}
    because = [b.text.removeprefix("Because you liked ") for b in find_all(browser, "#recs .because")]
    assert because and set(because) <= rated
    assert len(find_all(browser, "#rated li")) == 3
    assert [b.get_attribute("aria-pressed") for b in find_all(browser, "#rated li")[2].find_elements(
        "css selector", "button.star")] == ["false"] * 4 + ["true"]
    screenshot(browser, tmp_path, "serve-page.png")

    click(browser, lambda d: next(iter(find_all(d, "#recs li.rec .title")), None),
          "the first recommendation")  # movies like it
    wait_for(browser, lambda d: len(find_all(d, "#similar li")) == 10, "ten similar movies")
    assert find_all(browser, "#similar-title")[0].text == f"Movies like {titles[0].split('. ', 1)[1]}"
    assert find_all(browser, "#status")[0].text == ""


def test_the_page_fits_a_phone(browser, server, tmp_path):
    browser.set_window_size(390, 844)
    browser.get(server.url)
    rate(browser, "godfather", "Godfather, The (1972)", 5)
    recommendations(browser, 10)
    width, room = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= room, "the page scrolls sideways on a phone"
    search = find_all(browser, "#search")[0].rect
    results = find_all(browser, "#results")[0].rect
    assert results["y"] > search["y"]  # one column: the recommendations below the search
    screenshot(browser, tmp_path, "serve-page-phone.png")
    browser.set_window_size(1280, 900)


def test_an_error_from_the_server_is_shown(browser, server):
    browser.get(server.url)
    wait_for(browser, lambda d: "Model als" in find_all(d, "#model")[0].text, "the model's name")
    # What the page would send for a movie the model does not know (a stale page after a reload, say).
    browser.execute_script("rated.set(999999, {title: 'Gone', stars: 5}); refresh();")
    wait_for(browser, lambda d: "Movie 999999 is not in ml-100k" in find_all(d, "#status")[0].text, "the error")


# -- titles holding HTML stay text ----------------------------------------------------------------------------------
HOSTILE = ['<script>window.__pwned = "script";</script> (1995)',
           '<img src=x onerror="window.__pwned = &quot;img&quot;"> (1996)',
           "Bold <b>Move</b> & Co (1997)"]
TITLES = HOSTILE + [f"Plain Movie {i} (1990)" for i in range(1, 28)]
GENRES = ["unknown", "Action", "<i>Noir</i>", "Comedy"]


def hostile_release() -> bytes:
    """A zip in ml-100k's layout (u.data, u.item, u.genre, u.user) whose titles and a genre hold HTML."""
    rng = np.random.default_rng(0)
    n_users = 40
    rated = rng.random((n_users, len(TITLES))) < 0.5
    rated[:, :3] = True  # everybody rated the hostile ones: they are similar to everything and well known
    return ml100k_archive(rated, TITLES, GENRES, rng)


@contextmanager
def serving(tmp_path: Path, archive: bytes, *train: str) -> Iterator[Server]:
    """`movierec serve` of a model trained (``train`` options) on ``archive``, a release in ml-100k's layout,
    in a home of its own."""
    (tmp_path / "ml-100k.zip").write_bytes(archive)
    runner = CliRunner()
    with isolated_home(tmp_path / "home"):
        for args in (["fetch", "ml-100k", "--from-file", str(tmp_path / "ml-100k.zip"), "--no-verify"],
                     ["train", *train, "--split", "random", "--name", "m"]):
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.stderr
        s = Server("--model", "m")
        try:
            yield s
        finally:
            s.kill()


def test_titles_holding_html_are_shown_as_text(browser, tmp_path):
    with serving(tmp_path, hostile_release(), "mf", "--epochs", "1", "--factors", "2") as s:
        browser.set_window_size(1280, 900)
        browser.get(s.url)
        rate(browser, "script", HOSTILE[0], 5)
        rate(browser, "img", HOSTILE[1], 4)
        shown = [t.split(". ", 1)[1] for t in recommendations(browser, 10)]
        assert set(shown) <= set(TITLES[2:])
        assert [e.text for e in find_all(browser, "#rated li .title")] == HOSTILE[:2]
        find_all(browser, "#search")[0].send_keys("bold move")
        found = wait_for(browser, lambda d: [b.text for b in find_all(d, "#suggestions button.suggestion")],
                         "a suggestion")
        title, line = found[0].split("\n")
        assert title == HOSTILE[2] and line.startswith("1997 · Action, <i>Noir</i> · ")  # its genres too
        assert browser.execute_script("return window.__pwned") is None
        assert browser.execute_script("return document.querySelectorAll('script, img, b, i').length") == 1
        screenshot(browser, tmp_path, "serve-page-html-titles.png")


# -- a model that knows people: the "about you" panel --------------------------------------------------------------
def test_about_you_gives_a_list_before_any_rating(browser, tmp_path):
    from selenium.webdriver.support.ui import Select
    from synthetic import group_taste_archive

    with serving(tmp_path, group_taste_archive()[0], "hybrid", "--epochs", "10") as s:
        browser.set_window_size(1280, 900)
        browser.get(s.url)
        wait_for(browser, lambda d: find_all(d, "#occupation option")[1:], "the occupations")
        assert not find_all(browser, "#about")[0].get_attribute("hidden")
        Select(find_all(browser, "#occupation")[0]).select_by_visible_text("lawyer")
        recommendations(browser, 10)
        lines = [r.text for r in find_all(browser, "#recs li.rec .muted")]
        assert all("Romance" in line for line in lines[:3]), lines  # lawyers' genre (tests/synthetic.py)
        rate(browser, "western picture 1", "Western Picture 1 (1990)", 5)
        wait_for(browser, lambda d: any("Western" in r.text for r in find_all(d, "#recs li.rec .muted")),
                 "a western once one is rated")
        screenshot(browser, tmp_path, "serve-page-about-you.png")
