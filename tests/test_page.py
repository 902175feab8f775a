"""The search page at `/`, in a real headless Chromium (Debian's `chromium` and
`chromium-driver`, which `.ci/run` installs; nothing is downloaded at test time) driven by
Selenium, against the real service over the demo catalog. A shopper types, ticks a facet,
sets a price range, turns pages, follows links and the back button, by mouse and by keyboard;
every request the page makes stays on the service. The last state is saved as
docs/search-page.png (README's screenshot)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from service_helpers import DEMO, cli, service_process

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

from browser_helpers import headless_chromium, require_chromium  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

require_chromium()

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "search-page.png"
WAIT_S = 20


@pytest.fixture(scope="module")
def service(exported_model: Path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page")
    env = {"SHOPSEARCH_MODEL_DIR": str(exported_model), "SHOPSEARCH_DATA_DIR": str(tmp / "data")}
    cli("ingest", str(DEMO), "-c", "demo", "--rejects", str(tmp / "r.jsonl"), env=env)
    with service_process(env, "-c", "demo") as (url, _):
        yield url


@pytest.fixture(scope="module")
def requested():
    """Every URL the page asked for (Chrome's performance log), over the whole module."""
    return []


@pytest.fixture(scope="module")
def browser(service, requested):
    args = ("--window-size=1280,900", "--lang=en-US")
    logs = {"goog:loggingPrefs": {"performance": "ALL"}}
    with headless_chromium(args, logs) as driver:
        driver.execute_cdp_cmd(  # a 1280x900 page whatever the window's frame takes
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        try:
            yield driver
        finally:
            drain(driver, requested)


@pytest.fixture
def page(browser, service, requested):
    yield browser
    drain(browser, requested)


def drain(driver, requested: list[str]) -> None:
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.append(message["params"]["request"]["url"])


def open_page(driver, service: str, query: str = "") -> None:
    driver.get(f"{service}/{query}")
    settle(driver)


def settle(driver, until=lambda params: True) -> dict[str, list[str]]:
    """Waits until the page's URL passes `until` and the page shows that URL's state (it
    marks body[data-shown] with the state its last answer was for); the URL's parameters."""

    def shown(d):
        search, mark = d.execute_script("return [location.search, document.body.dataset.shown]")
        params = parse_qs(search.lstrip("?"))
        return [params] if until(params) and mark == search else False

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(shown)[0]
    except TimeoutException:
        state = driver.execute_script(
            "return [location.href, document.body.dataset.shown,"
            " document.getElementById('status').textContent]"
        )
        raise AssertionError(f"the page did not settle: {state}") from None


def results(driver) -> list[dict]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#results li.hit')].map(li => ({"
        " title: li.querySelector('h2').textContent, brand: li.dataset.brand,"
        " price: Number(li.dataset.price), text: li.innerText}))"
    )


def status(driver) -> str:
    return driver.find_element(By.ID, "status").text


def type_query(driver, text: str) -> None:
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(text)  # no Enter: the page searches as the shopper types


def test_typing_shows_results_without_enter(page, service):
    open_page(page, service)
    assert "Type to search" in status(page)
    type_query(page, "boots")
    params = settle(page, lambda p: p.get("q") == ["boots"])
    assert params == {"q": ["boots"]}
    hits = results(page)
    assert len(hits) == 10
    assert any("boots" in h["title"] for h in hits)
    assert "“boots”" in status(page)
    first = page.find_element(By.CSS_SELECTOR, "#results li.hit")
    assert "INR" in first.text or "₹" in first.text  # the price with its currency
    assert "footwear" in first.text  # the category path


def test_ticking_a_brand_shows_only_that_brand(page, service):
    open_page(page, service, "?q=shoes")
    box = page.find_element(By.CSS_SELECTOR, "fieldset[data-facet=brand] input")
    brand = box.get_attribute("value")
    count = int(page.find_element(By.CSS_SELECTOR, "fieldset[data-facet=brand] .n").text)
    box.click()
    params = settle(page, lambda p: p.get("brand") == [brand])
    assert params["q"] == ["shoes"]
    hits = results(page)
    assert 0 < len(hits) <= count
    assert {h["brand"] for h in hits} == {brand}
    ticked = page.find_element(By.CSS_SELECTOR, "input[data-field=brand]:checked")
    assert ticked.get_attribute("value") == brand
    ticked.click()
    assert "brand" not in settle(page, lambda p: "brand" not in p)
    assert len({h["brand"] for h in results(page)}) > 1


def test_a_price_range_keeps_prices_within_it(page, service):
    open_page(page, service, "?q=shoes")
    low, high = page.find_element(By.ID, "min"), page.find_element(By.ID, "max")
    assert low.get_attribute("placeholder") and high.get_attribute("placeholder")
    low.send_keys("500")
    high.send_keys("1500")
    settle(page, lambda p: p.get("min") == ["500"] and p.get("max") == ["1500"])
    prices = [h["price"] for h in results(page)]
    assert prices and all(500 <= p <= 1500 for p in prices)


def test_next_goes_to_page_two(page, service):
    open_page(page, service, "?q=shoes")
    first = [h["title"] for h in results(page)]
    assert page.find_element(By.ID, "prev").get_attribute("disabled") is not None
    page.find_element(By.ID, "next").click()
    params = settle(page, lambda p: p.get("page") == ["2"])
    assert params["q"] == ["shoes"]
    second = [h["title"] for h in results(page)]
    assert second and not set(second) & set(first)
    assert page.execute_script("return document.getElementById('results').start") == 11
    page.find_element(By.ID, "prev").click()
    settle(page, lambda p: "page" not in p)
    assert [h["title"] for h in results(page)] == first


def test_a_misspelled_query_says_what_it_searched(page, service):
    open_page(page, service)
    type_query(page, "womens casul shoes")
    settle(page, lambda p: p.get("q") == ["womens casul shoes"])
    notice = page.find_element(By.ID, "notice")
    assert notice.is_displayed()
    assert "Showing results for womens casual shoes" in notice.text
    page.find_element(By.ID, "as-typed").click()
    settle(page, lambda p: p.get("asis") == ["1"])
    assert not page.find_element(By.ID, "notice").is_displayed()
    page.back()
    settle(page, lambda p: "asis" not in p)
    assert page.find_element(By.ID, "notice").is_displayed()


def test_nothing_fits_shows_the_empty_state(page, service):
    open_page(page, service, "?q=boots&brand=crocs&min=900000")
    empty = page.find_element(By.ID, "empty")
    assert empty.is_displayed()
    assert "No products match “boots” with these filters" in empty.text
    assert results(page) == []
    assert "No products match" in status(page)
    assert not page.find_element(By.ID, "pager").is_displayed()


def test_keyboard_alone_reaches_the_results(page, service):
    open_page(page, service, "?q=boots")
    box = page.find_element(By.ID, "q")
    assert page.switch_to.active_element == box  # autofocus: the search box first
    order = []
    for _ in range(80):
        page.switch_to.active_element.send_keys(Keys.TAB)
        where = page.execute_script(
            "const el = document.activeElement;"
            "return [el.closest('#results') ? 'results' : el.closest('aside') ? 'filters'"
            " : el.closest('#pager') ? 'pager' : el.id || el.tagName,"
            " el.tagName, getComputedStyle(el).outlineStyle]"
        )
        order.append(where[0])
        if where[0] == "results":
            assert where[1] == "A"
            assert where[2] != "none"  # the focus shows
            break
    assert order[-1] == "results", order
    assert order[0] == "filters"  # search box, then the facets, then the results
    assert set(order) == {"filters", "results"}
    # a facet ticked by keyboard alone keeps the focus on its checkbox
    page.find_element(By.CSS_SELECTOR, "fieldset[data-facet=brand] input").send_keys(Keys.SPACE)
    settle(page, lambda p: "brand" in p)
    assert page.switch_to.active_element.get_attribute("data-field") == "brand"


def test_a_shared_url_and_the_back_button(page, service):
    open_page(page, service, "?q=boots")
    assert page.find_element(By.ID, "q").get_attribute("value") == "boots"
    boots = results(page)
    assert boots and all("boot" in h["text"].lower() for h in boots[:3])
    type_query(page, "watch")
    settle(page, lambda p: p.get("q") == ["watch"])
    assert results(page) != boots
    page.back()
    settle(page, lambda p: p.get("q") == ["boots"])
    assert page.find_element(By.ID, "q").get_attribute("value") == "boots"
    assert results(page) == boots
    page.forward()
    settle(page, lambda p: p.get("q") == ["watch"])
    assert page.find_element(By.ID, "q").get_attribute("value") == "watch"


def test_screenshot_and_no_request_leaves_the_service(page, service, requested):
    open_page(page, service, "?q=womens+casul+shoes&color=Black&max=2500")
    page.execute_script("document.activeElement.blur()")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert page.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size < 400_000
    drain(page, requested)
    resources = page.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    urls = [*requested, *resources]
    assert any(u.endswith("/search") for u in urls)
    outside = [u for u in urls if not (u.startswith(service + "/") or u.startswith("data:"))]
    assert not outside
