"""The photo-library page in headless Chromium: each query control (cutoff, sort, filters, similar, negative term,
uploads), the duplicates view, the keyboard, and screenshots checked at desktop and phone width.

One browser and one server for the module, over a small gallery with known dates and a planted duplicate.
Skipped without chromium, chromedriver and selenium (see tests/test_serve_browser.py).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")

from PIL import Image  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

from clipmath.serve import BackgroundServer, ServeConfig, create_app  # noqa: E402
from clipmath.store import index_folder  # noqa: E402
from tests.serve_support import EXAMPLES, open_retriever  # noqa: E402
from tests.test_serve_browser import driver, wait_for  # noqa: E402,F401 - one headless Chromium, skipped without it

#: gallery id -> (example photo, date taken); the last is dated by EXIF, the others by their file time.
PHOTOS = {
    "trips/chelsea.png": ("skimage/chelsea.png", "2020-01-15"),
    "trips/coffee.png": ("skimage/coffee.png", "2020-02-15"),
    "trips/rocket.jpg": ("skimage/rocket.jpg", "2020-03-15"),
    "trips/astronaut.png": ("skimage/astronaut.png", "2020-04-15"),
    "family/king2.jpg": ("arithmetic/king2.jpg", "2021-01-15"),
    "family/man2.jpg": ("arithmetic/man2.jpg", "2021-02-15"),
    "family/woman2.jpg": ("arithmetic/woman2.jpg", "2021-03-15"),
    "misc/stanford.jpg": ("ocr/stanford.jpg", "2022-01-15"),
    "misc/coco1.jpg": ("coco/COCO_val2014_000000060623.jpg", "2022-02-15"),
    "misc/coco2.jpg": ("coco/COCO_val2014_000000386164.jpg", "2022-03-15"),
    "misc/coco3.jpg": ("coco/COCO_val2014_000000008775.jpg", "2022-04-15"),
    "misc/exif.jpg": ("coco/COCO_val2014_000000027440.jpg", "2018-05-06"),
}
#: A smaller copy of trips/chelsea.png: the duplicates view must suggest the original.
COPY = "trips/chelsea-small.jpg"
DESKTOP, PHONE = (1280, 900), (375, 812)


def write_gallery(root: Path) -> dict[str, str]:
    """The photos with their dates; returns id -> ISO date taken."""
    taken = {}
    for item_id, (example, day) in PHOTOS.items():
        target = root / item_id
        target.parent.mkdir(parents=True, exist_ok=True)
        if item_id == "misc/exif.jpg":
            with Image.open(EXAMPLES / example) as image:
                exif = image.getexif()
                exif.get_ifd(0x8769)[36867] = day.replace("-", ":") + " 07:08:09"  # DateTimeOriginal
                image.save(target, exif=exif)
        else:
            shutil.copyfile(EXAMPLES / example, target)
            stamp = datetime.fromisoformat(day).replace(hour=12, tzinfo=timezone.utc).timestamp()
            os.utime(target, (stamp, stamp))
        taken[item_id] = day
    with Image.open(root / "trips/chelsea.png") as image:
        image.convert("RGB").resize((image.width // 2, image.height // 2)).save(root / COPY, quality=92)
    stamp = datetime(2023, 6, 1, tzinfo=timezone.utc).timestamp()
    os.utime(root / COPY, (stamp, stamp))
    taken[COPY] = "2023-06-01"
    return taken


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_encoder):
    base = tmp_path_factory.mktemp("photo-page")
    taken = write_gallery(base / "images")
    report = index_folder(base / "store", base / "images", tiny_encoder, progress=False)
    assert report.added == len(taken) and not report.bad
    retriever = open_retriever(base / "store", tiny_encoder)
    with BackgroundServer(create_app(retriever, ServeConfig(default_k=6))) as server:
        yield server, taken


@pytest.fixture
def page(driver, library):  # noqa: F811
    server, _ = library
    driver.set_window_size(*DESKTOP)
    driver.get(server.url)
    wait_for(
        driver, lambda d: d.find_elements(By.ID, "control-sort") and "Ready" in d.find_element(By.ID, "status").text
    )
    record_requests(driver)
    return driver


def record_requests(browser) -> None:
    """Keep the JSON bodies the page sends (window.sent) to check what a control asked the server."""
    browser.execute_script(
        "window.sent = []; const send = window.fetch;"
        "window.fetch = (url, options) => { window.sent.push([String(url), options && typeof options.body === 'string'"
        " ? JSON.parse(options.body) : null]); return send(url, options); };"
    )


def sent(browser, route: str) -> list[dict]:
    return [body for url, body in browser.execute_script("return window.sent;") if url.startswith(route)]


def post(server, route: str, body: dict) -> dict:
    request = urllib.request.Request(
        server.url.rstrip("/") + route, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def cards(browser) -> list:
    return browser.find_elements(By.CSS_SELECTOR, "#results .result")


def shown(browser) -> list[str]:
    return [c.get_attribute("data-id") for c in cards(browser) if "query" not in c.get_attribute("class")]


def run_search(browser, text: str = "", **fields: str) -> list[str]:
    """Fill the form's fields (by element id), submit, and wait for the answer; returns the result ids."""
    before = len(sent(browser, "/api/photos/"))
    for element_id, value in {"text": text, **fields}.items():
        box = browser.find_element(By.ID, element_id)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.ID, "search").click()
    settle(browser, before)
    return shown(browser)


def settle(browser, before: int) -> None:
    """Wait until a request after the first ``before`` was sent and answered (the search button is enabled again,
    the progress display gone)."""
    wait_for(browser, lambda d: len(sent(d, "/api/photos/")) > before)
    wait_for(browser, lambda d: d.find_element(By.ID, "search").is_enabled() and d.find_element(By.ID, "progress")
             .get_attribute("hidden") is not None)  # fmt: skip


def scores(browser) -> list[float]:
    return [float(c.get_attribute("data-score")) for c in cards(browser) if c.get_attribute("data-score")]


def test_the_cutoff_slider_draws_the_distribution_and_drops_results_below_it(page, library):
    first = run_search(page, "a photo")
    assert len(first) == 6 and sent(page, "/api/photos/search")[-1]["distribution"] >= 13
    histogram = page.find_element(By.ID, "histogram")
    assert histogram.get_attribute("data-scores") == "13" and histogram.is_displayed()
    heights = [b.size["height"] for b in histogram.find_elements(By.CLASS_NAME, "bar")]
    assert len(heights) == 24 and max(heights) > 20 and sum(h > 0 for h in heights) >= 3  # a drawn distribution
    distribution = post(library[0], "/api/photos/search", {"text": "a photo", "k": 13})["results"]
    third = distribution[2]["score"]
    axis = [float(page.find_element(By.ID, f"axis-{end}").text) for end in ("low", "high")]  # the scale, labelled
    assert axis[0] <= distribution[-1]["score"] and axis[1] >= distribution[0]["score"] and axis[1] - axis[0] < 1

    slider = page.find_element(By.ID, "cutoff")
    low = float(slider.get_attribute("min"))
    before = len(sent(page, "/api/photos/"))
    slider.send_keys(Keys.ARROW_RIGHT * int((third - low) / 0.001))  # the keyboard moves the cutoff
    cutoff = float(slider.get_attribute("value"))
    settle(page, before)
    wait_for(page, lambda d: len(shown(d)) < 6)
    expected = [r["id"] for r in distribution if r["score"] >= cutoff]
    assert 3 <= len(expected) < 6 and shown(page) == expected[:6]
    assert sent(page, "/api/photos/search")[-1]["controls"]["min_score"] == pytest.approx(cutoff)
    assert all(s >= cutoff for s in scores(page))
    passed = page.find_element(By.ID, "cutoff-passed")
    assert passed.get_attribute("data-passed") == str(len(expected)) and "of the best 13 pass" in passed.text
    assert histogram.find_elements(By.CSS_SELECTOR, ".bar.below")  # the bars under the cutoff are greyed


def test_sort_by_date_follows_the_dates_taken(page, library):
    _, taken = library
    by_score = run_search(page, "a photo")
    before = len(sent(page, "/api/photos/"))
    page.find_element(By.ID, "control-sort").send_keys("date")  # a select re-runs the query by itself
    settle(page, before)
    by_date = shown(page)
    assert sorted(by_date) == sorted(by_score)  # the same best six, newest first
    assert by_date == sorted(by_score, key=lambda i: taken[i], reverse=True)
    days = [c.get_attribute("data-taken")[:10] for c in cards(page)]
    assert days == [taken[i] for i in by_date]
    assert f"{taken[by_date[0]]} " in cards(page)[0].text  # the date is shown with the result
    exif = post(library[0], "/api/photos/search", {"text": "x", "controls": {"folder": "misc", "before": "2019-01-01"}})
    assert [r["photo"]["taken"] for r in exif["results"]] == ["2018-05-06T07:08:09"]  # the EXIF date wins


def test_folder_and_date_filters(page, library):
    _, taken = library
    found = run_search(page, "a photo", **{"control-folder": "family"})
    assert sorted(found) == ["family/king2.jpg", "family/man2.jpg", "family/woman2.jpg"]
    assert sent(page, "/api/photos/search")[-1]["controls"] == {"sort": "score", "folder": "family"}
    page.find_element(By.ID, "control-folder").clear()
    found = run_search(page, "a photo", **{"control-after": "2020-02-01", "control-before": "2020-04-01"})
    assert sorted(found) == ["trips/coffee.png", "trips/rocket.jpg"]
    assert all("2020-02-01" <= taken[i] < "2020-04-01" for i in found)
    for card in cards(page):  # each result shows its date and size
        assert taken[card.get_attribute("data-id")] in card.text and "×" in card.text


def test_paging_walks_the_results_with_offset(page, library):
    page.find_element(By.ID, "k").clear()
    page.find_element(By.ID, "k").send_keys("5")
    first = run_search(page, "a photo")
    everything = [r["id"] for r in post(library[0], "/api/photos/search", {"text": "a photo", "k": 13})["results"]]
    assert first == everything[:5] and not page.find_element(By.ID, "page-previous").is_enabled()
    for start in (5, 10):
        before = len(sent(page, "/api/photos/"))
        page.find_element(By.ID, "page-next").click()
        settle(page, before)
        assert shown(page) == everything[start : start + 5]
        assert sent(page, "/api/photos/search")[-1]["controls"]["offset"] == start
    assert (
        not page.find_element(By.ID, "page-next").is_enabled()
        and "Results 11–13" in page.find_element(By.ID, "pager").text
    )
    before = len(sent(page, "/api/photos/"))
    page.find_element(By.ID, "page-previous").click()
    settle(page, before)
    assert shown(page) == everything[5:10] and cards(page)[0].text.startswith("#6 ·")


def test_similar_on_a_result_lists_photos_like_it(page, library):
    first = run_search(page, "a photo")
    chosen = first[1]
    before = len(sent(page, "/api/photos/"))
    cards(page)[1].find_element(By.CLASS_NAME, "similar").click()
    settle(page, before)
    lead = cards(page)[0]
    assert lead.get_attribute("data-id") == chosen and "query" in lead.get_attribute("class")
    expected = post(library[0], "/api/photos/similar", {"reference": chosen, "k": 6})["results"]
    assert shown(page) == [r["id"] for r in expected] and chosen not in shown(page)
    assert sent(page, "/api/photos/similar")[-1]["reference"] == chosen
    assert page.find_element(By.ID, "reference").get_attribute("data-reference") == chosen
    if chosen == "trips/chelsea.png":
        assert shown(page)[0] == COPY


def test_a_negative_term_becomes_an_expression_and_pushes_its_match_down(page, library):
    server, _ = library
    everything = [r["id"] for r in post(server, "/api/photos/search", {"text": "a photo", "k": 13})["results"]]

    def moved(word: str) -> tuple[str, int, int]:
        best = post(server, "/api/photos/search", {"text": word, "k": 1})["results"][0]["id"]
        after = post(server, "/api/photos/search", {"expression": f'+"a photo" -"{word}"', "k": 13})["results"]
        return best, everything.index(best), [r["id"] for r in after].index(best)

    word = next(
        w for w in ("people", "a cat", "text", "a dog", "a car", "food", "the sky") if moved(w)[2] > moved(w)[1]
    )
    best, rank_before, rank_after = moved(word)
    page.find_element(By.ID, "k").clear()
    page.find_element(By.ID, "k").send_keys("13")
    assert run_search(page, "a photo").index(best) == rank_before
    found = run_search(page, "a photo", negative=word)
    assert sent(page, "/api/photos/search")[-1]["expression"] == f'+"a photo" -"{word}"'
    assert found.index(best) == rank_after > rank_before  # the photo most like the negative text moved down
    page.find_element(By.ID, "negative").clear()


def test_an_uploaded_photo_searches_with_the_controls(page):
    file_input = page.find_element(By.ID, "file-input")
    file_input.send_keys(str(EXAMPLES / "skimage/coffee.png"))
    wait_for(page, lambda d: d.find_element(By.ID, "reference").get_attribute("data-reference") == "coffee.png")
    found = run_search(page, "", **{"control-folder": "trips"})
    assert found[0] == "trips/coffee.png" and all(i.startswith("trips/") for i in found)
    body = sent(page, "/api/photos/search")[-1]
    assert set(body["reference"]) == {"upload_id"} and body["controls"]["folder"] == "trips"
    assert cards(page)[0].get_attribute("data-score").startswith("0.99") or float(scores(page)[0]) > 0.99


def test_the_duplicates_view_marks_the_best_copy_and_shows_progress(page, monkeypatch):
    import clipmath.serve.photos as photos

    release, real = threading.Event(), photos.duplicate_pairs

    def held(*args, **kwargs):
        release.wait(60)  # held until the page has shown its progress display
        return real(*args, **kwargs)

    monkeypatch.setattr(photos, "duplicate_pairs", held)
    page.find_element(By.ID, "view-duplicates").click()
    assert page.find_element(By.ID, "duplicates-view").is_displayed()
    assert not page.find_element(By.ID, "search-view").is_displayed()
    threshold = page.find_element(By.ID, "duplicate-threshold")
    threshold.clear()
    threshold.send_keys("0.9999")  # a random model puts every photo close: only the planted copy is this close
    page.find_element(By.ID, "find-duplicates").click()
    progress = page.find_element(By.ID, "progress")
    wait_for(page, lambda d: progress.is_displayed() and "duplicates" in progress.text)
    assert " s" in page.find_element(By.ID, "progress-time").text
    release.set()
    groups = wait_for(page, lambda d: d.find_elements(By.CSS_SELECTOR, ".duplicate-group"))
    assert len(groups) == 1 and sent(page, "/api/photos/duplicates") == [None]
    group = groups[0]
    assert group.get_attribute("data-best") == "trips/chelsea.png"
    ids = [f.get_attribute("data-id") for f in group.find_elements(By.CSS_SELECTOR, ".result")]
    assert ids == ["trips/chelsea.png", COPY]
    best = group.find_element(By.CSS_SELECTOR, ".result.best")
    assert best.get_attribute("data-id") == "trips/chelsea.png" and "Best copy" in best.text
    assert "Nothing was deleted" in page.find_element(By.ID, "duplicates-summary").text
    assert not progress.is_displayed()


def test_keyboard_alone_reaches_every_control_and_opens_a_result(page):
    run_search(page, "a photo")
    page.find_element(By.TAG_NAME, "body").click()
    reached = []
    for _ in range(80):
        ActionChains(page).send_keys(Keys.TAB).perform()  # key presses, as a person would (not element input)
        active = page.switch_to.active_element
        reached.append(active.get_attribute("id") or active.get_attribute("class") or active.tag_name)
    for control in (
        "file-input",
        "browse",
        "text",
        "negative",
        "control-sort",
        "control-folder",
        "control-after",
        "control-min_size",
        "search",
        "cutoff",
        "view-duplicates",
    ):
        assert control in reached, control
    assert "thumb" in reached and "similar" in reached
    unlabelled = page.execute_script(
        "return [...document.querySelectorAll('input, select, button, [tabindex]')].filter(e => e.offsetParent || "
        "e.type === 'file').filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && "
        "!e.getAttribute('aria-labelledby') && !e.textContent.trim()).map(e => e.outerHTML.slice(0, 80));"
    )
    assert unlabelled == []
    thumb = cards(page)[2].find_element(By.CLASS_NAME, "thumb")
    chosen = cards(page)[2].get_attribute("data-id")
    thumb.send_keys(Keys.ENTER)  # Enter on a focused result uses it as the reference
    assert page.find_element(By.ID, "reference").get_attribute("data-reference") == chosen
    page.find_element(By.ID, "text").click()
    page.switch_to.active_element.send_keys(Keys.TAB)
    focused = page.switch_to.active_element
    assert focused.get_attribute("id") == "negative" and focused.value_of_css_property("outline-width") == "3px"


def check_screenshot(browser, path: Path, width: int) -> None:
    """The page at ``width``: no horizontal scrolling, no broken image, a screenshot of the window's size that is
    not blank."""
    browser.set_window_size(width, DESKTOP[1] if width == DESKTOP[0] else PHONE[1])
    inner = browser.execute_script("return [window.innerWidth, window.innerHeight, window.devicePixelRatio];")
    assert inner[0] == width
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth;")
    wait_for(browser, lambda d: d.execute_script(
        "return [...document.images].every(i => { const r = i.getBoundingClientRect();"
        " const seen = i.offsetParent !== null && r.bottom > 0 && r.top < innerHeight;"
        " return !seen || (i.complete && i.naturalWidth > 0); });"))  # fmt: skip
    broken = browser.execute_script(
        "return [...document.images].filter(i => i.offsetParent !== null && i.complete && i.naturalWidth === 0)"
        ".map(i => i.outerHTML.slice(0, 80));"
    )
    assert broken == []
    png = browser.get_screenshot_as_png()
    path.write_bytes(png)
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (round(inner[0] * inner[2]), round(inner[1] * inner[2]))
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50  # photos, text and controls, not a blank page


def test_screenshots_at_desktop_and_phone_width(page, tmp_path_factory):
    folder = Path(os.environ.get("CLIPMATH_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    assert page.find_element(By.CSS_SELECTOR, "#slot-before img").get_attribute("src") is None  # empty slots
    run_search(page, "a photo")
    page.execute_script("window.scrollTo(0, 0);")
    check_screenshot(page, folder / "photo-page-desktop.png", DESKTOP[0])
    check_screenshot(page, folder / "photo-page-phone-top.png", PHONE[0])
    layout = page.execute_script(
        "const q = document.getElementById('query-panel').getBoundingClientRect();"
        "const r = document.getElementById('results-panel').getBoundingClientRect(); return [q.bottom, r.top];"
    )
    assert layout[1] >= layout[0]  # at phone width the panels stack
    run_search(page, "a photo")  # at phone width, a search brings its results into view
    wait_for(
        page,
        lambda d: d.execute_script("return document.getElementById('cutoff-box').getBoundingClientRect().top;") < 200,
    )
    check_screenshot(page, folder / "photo-page-phone.png", PHONE[0])
    page.set_window_size(*DESKTOP)


def webm_clip(path: Path, seconds: int = 3, fps: int = 10) -> None:
    """A clip whose colour changes each second (red, green, blue), written with PyAV."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(seconds * fps):
            pixels = np.zeros((48, 64, 3), np.uint8)
            pixels[..., index // fps % 3] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_a_video_frame_result_plays_its_video_from_its_time(driver, tmp_path, tiny_encoder):  # noqa: F811
    """A video in the indexed folder becomes frame rows (its colour cuts at 1 s and 2 s are scene changes); a
    frame's hit shows its time and plays ``/api/video/<path>`` (the real route, with range requests) from it."""
    pytest.importorskip("av")
    from clipmath.store.indexer import IndexConfig

    root = tmp_path / "images"
    webm_clip(root / "clips/clip.webm")
    shutil.copyfile(EXAMPLES / "skimage/coffee.png", root / "coffee.png")
    config = IndexConfig(video_every=10.0)  # scene changes only: frames at 0, 1 and 2 s
    report = index_folder(tmp_path / "store", root, tiny_encoder, config, progress=False)
    frame = "clips/clip.webm#t=1.000"
    assert report.bad == [] and frame in open_retriever(tmp_path / "store", tiny_encoder).metadata()
    app = create_app(open_retriever(tmp_path / "store", tiny_encoder), ServeConfig(default_k=4))
    with BackgroundServer(app) as server:
        driver.set_window_size(*DESKTOP)
        driver.get(server.url)
        wait_for(driver, lambda d: d.find_elements(By.ID, "control-sort"))
        record_requests(driver)
        run_search(driver, "a frame")
        card = driver.find_element(By.CSS_SELECTOR, f'#results .result.video[data-id="{frame}"]')
        assert "0:01.0" in card.text and "clips/clip.webm" in card.text
        thumb = card.find_element(By.CSS_SELECTOR, ".thumb img")
        assert "/api/thumbnail/clips/clip.webm%23t%3D1.000" in thumb.get_attribute("src")  # the '#' encoded
        wait_for(driver, lambda d: d.execute_script("return arguments[0].naturalWidth > 0;", thumb))
        card.find_element(By.CLASS_NAME, "thumb").send_keys(Keys.ENTER)  # Enter on a video frame plays it
        player = driver.find_element(By.ID, "player")
        wait_for(driver, lambda d: player.is_displayed())
        video_element = driver.find_element(By.ID, "player-video")
        assert video_element.get_attribute("src").endswith("/api/video/clips/clip.webm#t=1")
        wait_for(driver, lambda d: d.execute_script("return arguments[0].readyState >= 1;", video_element))
        position = driver.execute_script("return arguments[0].currentTime;", video_element)
        assert 0.9 <= position <= 2.5  # started from the frame's time, not from 0
        assert driver.execute_script("return arguments[0].error === null;", video_element)  # the route played
        assert "clip.webm at 0:01.0" in driver.find_element(By.ID, "player-title").text
        driver.find_element(By.ID, "player-close").click()
        assert not player.is_displayed()
