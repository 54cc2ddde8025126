"""End-to-end: the web page in headless Chromium against a real uvicorn server on 127.0.0.1.

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the ``selenium`` package; skipped otherwise.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from clipmath.serve import BackgroundServer, FunctionCaptioner, ServeConfig, create_app  # noqa: E402
from tests.serve_support import EXAMPLES, FIRST, build_store, open_retriever  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or next(
    (str(p) for p in (Path("/usr/bin/chromedriver"), Path("/usr/lib/chromium/chromedriver")) if p.exists()), None
)
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
        "headless browser test needs chromium and chromedriver (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

TOKEN = "browser-test-token-123"
WAIT = 60


@pytest.fixture(scope="module")
def retriever(tmp_path_factory, tiny_encoder):
    store, _ = build_store(tmp_path_factory.mktemp("browser"), tiny_encoder, FIRST)
    return open_retriever(store, tiny_encoder)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield browser
    browser.quit()


def wait_for(driver, condition, timeout: float = WAIT):
    return WebDriverWait(driver, timeout).until(condition)


def results(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "#results .result")


def reference_of(driver) -> str:
    return driver.find_element(By.ID, "reference").get_attribute("data-reference")


def search(driver, text: str) -> list[str]:
    """Type ``text``, submit, and wait for a fresh result grid; returns the result ids."""
    old = results(driver)
    box = driver.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "search").click()
    if old:
        wait_for(driver, EC.staleness_of(old[0]))
    wait_for(driver, lambda d: len(results(d)) > 0)
    return [figure.get_attribute("data-id") for figure in results(driver)]


def thumbnails_loaded(driver) -> bool:
    return driver.execute_script(
        "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0);"
    )


def test_pick_search_and_refine(driver, retriever):
    with BackgroundServer(create_app(retriever, ServeConfig(default_k=6))) as server:
        driver.get(server.url)
        wait_for(driver, lambda d: "tiny-random-clip" in d.find_element(By.ID, "model").text)
        assert "12 images" in driver.find_element(By.ID, "store-count").text

        # pick a reference from the gallery picker, filtered by name
        driver.find_element(By.ID, "browse").click()
        driver.find_element(By.ID, "picker-filter").send_keys("chelsea")
        item = wait_for(
            driver, EC.element_to_be_clickable((By.CSS_SELECTOR, '#picker-grid .item[data-id="skimage/chelsea.png"]'))
        )
        wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#picker-grid .item")) == 1)
        item = driver.find_element(By.CSS_SELECTOR, '#picker-grid .item[data-id="skimage/chelsea.png"]')
        item.click()
        assert reference_of(driver) == "skimage/chelsea.png"

        # composed query: reference + text
        first = search(driver, "as a dog on the grass")
        assert len(first) == 6 and "skimage/chelsea.png" not in first
        assert set(first) <= set(FIRST)
        scores = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#results .score")]
        assert scores[0].startswith("#1 · ") and len(scores) == 6
        assert "sum" in driver.find_element(By.ID, "results-title").text
        wait_for(driver, thumbnails_loaded)

        # click a result: it becomes the next reference, the previous one goes to the history
        chosen = first[1]
        results(driver)[1].find_element(By.TAG_NAME, "button").click()
        assert reference_of(driver) == chosen
        assert len(driver.find_elements(By.CSS_SELECTOR, "#history li")) == 1
        second = search(driver, "at night")
        assert chosen not in second and len(second) == 6
        assert "Click one" in driver.find_element(By.ID, "status").text

        # going back in the history restores the earlier reference
        driver.find_element(By.CSS_SELECTOR, "#history li button").click()
        assert reference_of(driver) == "skimage/chelsea.png"

        # a bad query shows the server's message, not a crash
        driver.find_element(By.ID, "clear-reference").click()
        driver.find_element(By.ID, "text").clear()
        driver.find_element(By.ID, "search").click()
        wait_for(driver, lambda d: "give a query" in d.find_element(By.ID, "status").text)


def test_upload_a_reference_file(driver, retriever):
    with BackgroundServer(create_app(retriever, ServeConfig(default_k=4))) as server:
        driver.get(server.url)
        wait_for(driver, lambda d: "tiny-random-clip" in d.find_element(By.ID, "model").text)
        file_input = driver.find_element(By.ID, "file-input")
        driver.execute_script("arguments[0].hidden = false;", file_input)
        file_input.send_keys(str(EXAMPLES / "skimage/coffee.png"))
        wait_for(driver, lambda d: reference_of(d) == "coffee.png")
        driver.find_element(By.CSS_SELECTOR, '#method option[value="image"]').click()
        found = search(driver, "")
        assert found[0] == "skimage/coffee.png"  # an uploaded copy of a gallery photo finds that photo


def test_token_prompt_then_search(driver, retriever):
    with BackgroundServer(create_app(retriever, ServeConfig(token=TOKEN, default_k=3))) as server:
        driver.delete_all_cookies()
        driver.get(server.url)
        token_box = wait_for(driver, EC.visibility_of_element_located((By.ID, "token")))
        token_box.send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait_for(driver, lambda d: "tiny-random-clip" in d.find_element(By.ID, "model").text)
        assert not driver.find_element(By.ID, "auth").is_displayed()
        assert len(search(driver, "a rocket")) == 3
        wait_for(driver, thumbnails_loaded)  # <img> requests carry the token cookie


def slot_of(driver, which: str) -> str:
    return driver.find_element(By.ID, f"slot-{which}").get_attribute("data-reference")


def test_compare_two_images_shows_the_difference_caption(driver, retriever):
    release = threading.Event()

    def difference(before, after) -> str:
        release.wait(WAIT)  # held until the page has shown that it is busy
        return f"{before.label} became {after.label}"

    captioner = FunctionCaptioner("toy differences", difference_fn=difference)
    with BackgroundServer(create_app(retriever, ServeConfig(default_k=3), captioner=captioner)) as server:
        driver.get(server.url)
        wait_for(driver, lambda d: "tiny-random-clip" in d.find_element(By.ID, "model").text)
        assert not driver.find_element(By.ID, "compare-button").is_enabled()
        assert driver.find_element(By.ID, "compare-output").text == ""  # on: no "off" note

        # "before" from the gallery picker, "after" from a file
        driver.find_element(By.CSS_SELECTOR, "#slot-before .slot-pick").click()
        driver.find_element(By.ID, "picker-filter").send_keys("rocket")
        wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#picker-grid .item")) == 1)
        driver.find_element(By.CSS_SELECTOR, '#picker-grid .item[data-id="skimage/rocket.jpg"]').click()
        assert slot_of(driver, "before") == "skimage/rocket.jpg"
        assert reference_of(driver) == ""  # picking for a slot leaves the search reference alone
        file_input = driver.find_element(By.CSS_SELECTOR, "#slot-after .slot-file")
        driver.execute_script("arguments[0].hidden = false;", file_input)
        file_input.send_keys(str(EXAMPLES / "skimage/coffee.png"))
        wait_for(driver, lambda d: slot_of(d, "after") == "coffee.png")

        driver.find_element(By.ID, "compare-button").click()
        output = driver.find_element(By.ID, "compare-output")
        wait_for(driver, lambda d: "busy" in output.get_attribute("class"))
        assert "Describing" in output.text and not driver.find_element(By.ID, "compare-button").is_enabled()
        release.set()
        wait_for(driver, lambda d: "became" in output.text)
        assert output.text.startswith("skimage/rocket.jpg became upload:") and "(toy differences)" in output.text
        assert "busy" not in output.get_attribute("class")

        # swapping sends the pair the other way round
        driver.find_element(By.ID, "compare-swap").click()
        assert slot_of(driver, "before") == "coffee.png"
        driver.find_element(By.ID, "compare-button").click()
        wait_for(driver, lambda d: output.text.endswith("became skimage/rocket.jpg (toy differences)"))


def test_compare_without_a_difference_captioner_says_how_to_turn_it_on(driver, retriever):
    with BackgroundServer(create_app(retriever, ServeConfig(default_k=3))) as server:
        driver.get(server.url)
        output = driver.find_element(By.ID, "compare-output")
        wait_for(driver, lambda d: "--diff-checkpoint" in output.text)
        for which, name in (("before", "skimage/chelsea.png"), ("after", "skimage/astronaut.png")):
            driver.find_element(By.CSS_SELECTOR, f"#slot-{which} .slot-pick").click()
            driver.find_element(By.ID, "picker-filter").clear()
            driver.find_element(By.ID, "picker-filter").send_keys(name)
            wait_for(
                driver,
                lambda d, name=name: (
                    [e.get_attribute("data-id") for e in d.find_elements(By.CSS_SELECTOR, "#picker-grid .item")]
                    == [name]
                ),
            )
            driver.find_element(By.CSS_SELECTOR, "#picker-grid .item").click()
            assert slot_of(driver, which) == name
        driver.execute_script("document.getElementById('compare-output').textContent = '';")
        driver.find_element(By.ID, "compare-button").click()  # the server answers 501
        wait_for(driver, lambda d: "difference captions are off" in output.text.lower())
        assert "--caption-lm" in output.text and "error" not in output.get_attribute("class")
