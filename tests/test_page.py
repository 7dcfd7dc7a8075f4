"""The web page in a real headless browser (Debian's Chromium driven by Playwright) against a real server."""

import base64
import io
import json
import math
import os
import re
import shutil

import httpx
import numpy as np
import pytest

from conftest import start_server, uvicorn_in_thread
from fmnist import artifacts, plots
from fmnist.data import load_dataset
from fmnist.facts import CLASS_NAMES
from samples import encode, garment, photo_like

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def server(real_run_dir, tmp_path_factory):
    process, base = start_server(real_run_dir, tmp_path_factory.mktemp("server") / "serve.log")
    try:
        yield base
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is missing: run 'bash scripts/setup.sh', which installs it")
    with sync_playwright() as playwright:
        # Playwright's own browser download cannot work offline: drive the system's Chromium.
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 760})
    opened = context.new_page()
    opened.requested = []
    opened.on("request", lambda request: opened.requested.append(request.url))
    opened.goto(server)
    opened.wait_for_function("document.querySelector('#model').textContent.startsWith('run ')")
    yield opened
    assert all(url.startswith((server, "data:", f"blob:{server}")) for url in opened.requested), opened.requested
    context.close()


def seen_brightness(page) -> float:
    return page.evaluate("""() => {
        const data = document.querySelector('#seen').getContext('2d').getImageData(0, 0, 28, 28).data;
        let total = 0;
        for (let i = 0; i < data.length; i += 4) total += data[i];
        return total / (255 * 28 * 28);
    }""")


def evidence_tints(page) -> tuple[int, int]:
    """Pixels of the evidence canvas tinted red (for the answer) and blue (against it)."""
    return tuple(page.evaluate("""() => {
        const data = document.querySelector('#evidence').getContext('2d').getImageData(0, 0, 28, 28).data;
        let red = 0, blue = 0;
        for (let i = 0; i < data.length; i += 4) {
            if (data[i] > data[i + 2] + 60) red++;
            if (data[i + 2] > data[i] + 60) blue++;
        }
        return [red, blue];
    }"""))


def bar_probabilities(page) -> dict[str, float]:
    return {row.get_attribute("data-class"): float(row.get_attribute("data-probability"))
            for row in page.locator("#bars li").all()}


CONTRAST = """(selector) => {  // WCAG's contrast ratio of an element's border against its panel's background
    const luminance = (css) => {
        const [r, g, b] = css.match(/\\d+/g).slice(0, 3).map((v) => {
            const c = Number(v) / 255;
            return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const element = document.querySelector(selector);
    const [a, b] = [getComputedStyle(element).borderTopColor,
                    getComputedStyle(element.closest(".panel")).backgroundColor].map(luminance);
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


def test_a_screen_reader_hears_the_answer_and_whether_the_model_is_unsure(page, tmp_path):
    """WCAG 2.2: the picker keeps its name once a photo is in its label (4.1.2), the answer and the unsure line are
    announced together (4.1.3), the pad says how to do without it, and the outlines that show where to drop and draw
    stand out from the panel by 3:1 (1.4.11)."""
    from playwright.sync_api import expect

    picker = page.locator("#file-input")
    expect(picker).to_have_accessible_name(re.compile(r"^Drop an image here, or click to pick one"))
    assert page.inner_text("#label") == "" and "—" in page.evaluate(
        "getComputedStyle(document.querySelector('#label'), '::before').content")  # a dash to see, none to hear
    photo = tmp_path / "shirt.png"
    photo.write_bytes(encode(garment()))
    picker.set_input_files(str(photo))
    page.wait_for_selector('#timing[data-input="shirt.png"]')
    expect(picker).to_have_accessible_name(re.compile(r"^Drop an image here, or click to pick one"))
    assert page.get_attribute("#preview", "alt") == "the picked photo, shirt.png"
    announced = page.locator("[aria-live]").filter(has=page.locator("#label"))
    assert announced.get_attribute("aria-atomic") == "true" and announced.locator("#unsure").count() == 1
    expect(page.get_by_role("img", name=re.compile(r"^drawing pad: .* \(with a keyboard, pick a file under Photo\)$"))
           ).to_have_count(1)
    for outline in ("#pad", "#drop"):
        assert page.evaluate(CONTRAST, outline) >= 3, outline


def test_uploading_a_real_test_image_shows_its_label(page, server, real_data_dir, tmp_path):
    dataset = load_dataset(real_data_dir)
    candidates = dataset.x_test[:64]  # as many as one request takes
    answers = httpx.post(f"{server}/v1/predict", json={"inputs": candidates.reshape(64, -1).tolist()}).json()
    # Right and confident, but not so sure that no patch moves its answer (its map would be faded: no red to see).
    confident = [i for i, a in enumerate(answers["predictions"])
                 if a["top"][0]["index"] == dataset.y_test[i] and 0.9 < a["top"][0]["probability"] < 0.99]
    index = confident[0]
    data, name = photo_like(dataset.x_test[index], seed=1)
    photo = tmp_path / name
    photo.write_bytes(data)
    truth = CLASS_NAMES[dataset.y_test[index]]

    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(f'#evidence[data-input="{name}"]')
    assert page.inner_text("#label").startswith(truth)
    bars = bar_probabilities(page)
    assert list(bars) == list(CLASS_NAMES) and max(bars, key=bars.get) == truth
    assert page.get_attribute("#bars li.best", "data-class") == truth
    assert 0.05 < seen_brightness(page) < 0.9
    red, blue = evidence_tints(page)
    assert 0 < red < 28 * 28 and blue < 28 * 28  # some pixels speak for the answer, not the whole square
    caption = page.inner_text("#evidence + figcaption")
    assert re.fullmatch(r"red: for its answer, blue: against\npeak \d+\.\d%", caption), caption
    assert page.is_hidden("#error")

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("FMNIST_SCREENSHOT"):  # how the README's picture is made
        shutil.copy(shot, os.environ["FMNIST_SCREENSHOT"])


def test_a_28x28_npy_the_picker_offers_is_answered_with_its_map(page, real_data_dir, tmp_path):
    assert ".npy" in page.get_attribute("#file-input", "accept").split(",")  # the picker lists them
    assert page.inner_text("#drop-text").endswith("or a\xa028×28\xa0.npy")  # kept on one line
    array, test = tmp_path / "test-image.npy", load_dataset(real_data_dir, test_only=True)
    np.save(array, test.x_test[0].astype(np.float32) / 255)  # floats, 0-1: an ankle boot the model gets right
    page.set_input_files("#file-input", str(array))
    page.wait_for_selector(f'#evidence[data-input="{array.name}"]')
    assert page.inner_text("#label").startswith(CLASS_NAMES[test.y_test[0]]) and page.is_hidden("#error")
    assert page.is_hidden("#preview")  # no picture of it to show: the 28x28 input the model saw instead
    assert page.inner_text("#note") == (f"{array.name}: an array, with no picture to show here: what the model saw is "
                                        "under Prediction")
    dropped = page.evaluate_handle("""([data, name]) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([Uint8Array.from(atob(data), (c) => c.charCodeAt(0))], name));
        transfer.items.add(new File(["x"], "other.png", {type: "image/png"}));
        return transfer;
    }""", [base64.b64encode(array.read_bytes()).decode(), "dropped.npy"])
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})  # with another file: both notes kept
    page.wait_for_function("document.querySelector('#note').textContent.startsWith('2 files given: the page "
                           "classifies one, dropped.npy; dropped.npy: an array')")


def test_drawing_on_the_canvas_shows_probabilities(page, tmp_path):
    photo = tmp_path / "shirt.png"  # a photo answered first, which the drawing's answer takes the place of
    photo.write_bytes(encode(garment()))
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector('#timing[data-input="shirt.png"]')
    assert page.is_visible("#preview")
    box = page.locator("#pad").bounding_box()
    x, y = box["x"], box["y"]
    page.mouse.move(x + 70, y + 40)
    page.mouse.down()
    for px, py in ((70, 240), (125, 240), (140, 110), (155, 240), (210, 240), (210, 40), (70, 40)):
        page.mouse.move(x + px, y + py, steps=6)
    page.mouse.up()
    page.wait_for_selector('#timing[data-input="drawing.png"]')
    assert page.is_hidden("#preview") and page.is_visible("#drop-text")  # no photo beside the drawing's answer
    bars = bar_probabilities(page)
    assert list(bars) == list(CLASS_NAMES) and sum(bars.values()) == pytest.approx(1.0, abs=0.01)
    assert page.inner_text("#label").split(" ")[0] in {name.split(" ")[0] for name in CLASS_NAMES}
    assert seen_brightness(page) > 0.05
    # The page's own rounding: an answer short of certain never reads 100.0%; a map's largest change as the report's.
    assert page.evaluate("[0.99996, 1, 0.1234].map(percent)") == [">99.9%", "100.0%", "12.3%"]
    maps = [[0.0, -0.1234], [2e-6, -1e-6], [0.0009, 0.0011], [0.5, 0.0]]
    assert page.evaluate(f"{maps}.map(mapPeak)") == [plots.map_peak(np.array(m)) for m in maps]

    page.click("#clear")
    assert page.locator("#bars li").count() == 0
    assert seen_brightness(page) == 0 and evidence_tints(page) == (0, 0) and page.inner_text("#timing") == ""
    assert np.isclose(page.evaluate("document.querySelector('#pad').getContext('2d').getImageData(140, 140, 1, 1)"
                                    ".data[0]"), 255)
    # A right click draws nothing and sends nothing; Clear wipes the drawing, never a photo's answer.
    sent = len([url for url in page.requested if "/v1/predict" in url])
    page.mouse.click(x + 140, y + 140, button="right")
    assert page.evaluate("document.querySelector('#pad').getContext('2d').getImageData(140, 140, 1, 1).data[0]") == 255
    pick(page, photo)  # the same file again: as a user picks it
    page.wait_for_selector('#evidence[data-input="shirt.png"]')
    assert len([url for url in page.requested if "/v1/predict" in url]) == sent + 2  # the photo's answer and map
    page.click("#clear")
    assert page.locator("#bars li").count() == len(CLASS_NAMES) and page.get_attribute("#timing", "data-input") == \
        "shirt.png" and page.is_visible("#preview")
    # A drop beside the box is kept from replacing the page (and what it shows); one with no file says so.
    assert page.evaluate("document.body.dispatchEvent(new DragEvent('drop', {bubbles: true, cancelable: true}))") \
        is False
    assert page.inner_text("#note") == "that was no file: drop an image file, or click to pick one"
    page.evaluate("document.querySelector('#note').hidden = true")
    page.dispatch_event("#label", "dragstart")  # dragged from the page itself: dropped, nothing happens
    page.dispatch_event("body", "drop")
    page.dispatch_event("#label", "dragend")
    assert page.is_hidden("#note")


def pick(page, path) -> None:
    """Pick a file as a user does: a click opens the picker, then the file is chosen there."""
    with page.expect_file_chooser() as chooser:
        page.click("#file-input")
    chooser.value.set_files(str(path))


def wait_until(page, condition, seconds: float = 20) -> None:
    """Let the page run until ``condition()`` holds (a request held or failed in the browser), for ``seconds`` at most;
    the test's own assertions then say what is missing."""
    for _ in range(int(seconds * 50)):
        if condition():
            return
        page.wait_for_timeout(20)


def photo_files(real_data_dir, folder, count: int) -> list:
    dataset = load_dataset(real_data_dir)
    paths = []
    for index in range(count):
        data, name = photo_like(dataset.x_test[index], seed=index)
        paths.append(folder / f"{index}-{name}")
        paths[-1].write_bytes(data)
    return paths


def test_an_upload_overtaken_by_a_newer_one_is_cancelled_and_never_shown(page, real_data_dir, tmp_path):
    held, cancelled = [], []
    page.route("**/v1/predict*", lambda route: held.append(route))  # requests wait here until the test lets them go
    page.on("requestfailed", lambda request: cancelled.append(request))
    photos = photo_files(real_data_dir, tmp_path, 2)
    for index, photo in enumerate(photos):
        page.set_input_files("#file-input", str(photo))
        wait_until(page, lambda: len(held) > index)  # the page has sent it
        assert page.inner_text("#status") == f"classifying {photo.name}…"
    assert len(held) == 2, held
    older, newer = held
    wait_until(page, lambda: cancelled, seconds=5)
    assert [request.url for request in cancelled] == [older.request.url]  # the server need not answer it
    newer.continue_()
    page.wait_for_selector(f'#timing[data-input="{photos[1].name}"]')
    assert len(held) == 3 and "explain=true" in held[2].request.url  # only the newer upload asks for its map
    held[2].continue_()
    page.wait_for_selector(f'#evidence[data-input="{photos[1].name}"]')
    assert page.inner_text("#status") == "" and page.is_hidden("#error")


def test_a_failed_upload_wipes_the_previous_answer_and_the_same_file_can_be_tried_again(page, real_data_dir,
                                                                                         tmp_path):
    photo, = photo_files(real_data_dir, tmp_path, 1)
    pick(page, photo)
    page.wait_for_selector(f'#evidence[data-input="{photo.name}"]')
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    for attempt in (1, 2):  # the second pick of the same file is sent too (a browser sends no event for it)
        pick(page, notes)
        page.wait_for_selector("#error:not([hidden])")
        assert page.inner_text("#error").startswith("notes.txt is not a supported image")  # named once
        page.wait_for_selector("#preview", state="hidden")  # no broken picture beside the reason
        assert page.locator("#bars li").count() == 0 and page.inner_text("#label") == ""
        assert page.inner_text("#timing") == "" and seen_brightness(page) == 0
        sent = [url for url in page.requested if "/v1/predict" in url]
        assert len(sent) == 2 + attempt, sent  # the photo's answer and map, then one per pick of the notes
        page.evaluate("document.querySelector('#error').hidden = true")


def test_a_photo_over_the_servers_limit_is_refused_by_the_page_before_it_is_sent(page, tmp_path):
    limit = httpx.get(page.url + "v1/model").json()["max_body_bytes"]
    big = tmp_path / "big.png"
    big.write_bytes(encode(garment()) + b"\0" * limit)  # a PNG with the server's whole limit of trailing bytes
    page.set_input_files("#file-input", str(big))
    page.wait_for_selector("#error:not([hidden])")
    mib = f"{(big.stat().st_size / 2**20):.1f}"
    assert page.inner_text("#error") == (f"big.png is {mib} MiB: the server takes at most {limit / 2**20:.1f} MiB a "
                                         "request (fmnist serve --max-upload-mb); pick a smaller image")
    assert not [url for url in page.requested if "/v1/predict" in url]


def test_a_server_that_fails_or_goes_away_is_explained_and_the_page_recovers(browser, server, real_data_dir, tmp_path):
    context = browser.new_context(viewport={"width": 320, "height": 700})  # a small phone
    page = context.new_page()
    page.route("**/v1/model", lambda route: route.fulfill(status=503, json={"error": "the server is stopping"}))
    page.goto(server)
    page.wait_for_function("document.querySelector('#model').textContent.startsWith('could not')")
    assert page.inner_text("#model") == "could not read the model's details: the server is stopping"
    assert page.evaluate("document.documentElement.scrollWidth") <= 320  # nothing sticks out sideways
    pad, panel = (page.locator(selector).bounding_box() for selector in ("#pad", "#pad >> xpath=.."))
    assert pad["x"] + pad["width"] <= panel["x"] + panel["width"]

    photo, = photo_files(real_data_dir, tmp_path, 1)
    page.route("**/v1/predict*", lambda route: route.fulfill(status=502, body="<html>Bad Gateway</html>"))
    pick(page, photo)
    page.wait_for_selector("#error:not([hidden])")
    # The model's details are asked for again first, and their failure is what the user is told.
    assert page.inner_text("#error").endswith("could not read the model's details: the server is stopping")
    page.unroute("**/v1/model")
    pick(page, photo)
    page.wait_for_function("document.querySelector('#error').textContent.includes('502')")
    assert page.inner_text("#error").startswith(f"{photo.name}: the server answered 502")
    assert page.inner_text("#model").startswith("run ")
    page.unroute("**/v1/predict*")
    page.route("**/v1/predict*", lambda route: route.abort())  # as if the server had stopped
    pick(page, photo)
    page.wait_for_function("document.querySelector('#error').textContent.includes('still running')")
    page.unroute("**/v1/predict*")
    pick(page, photo)
    page.wait_for_selector(f'#evidence[data-input="{photo.name}"]')
    assert page.is_hidden("#error") and page.locator("#bars li").count() == len(CLASS_NAMES)
    page.route(lambda url: "explain=true" in url, lambda route: route.fulfill(status=502, body="down"))
    pick(page, photo)
    page.wait_for_selector("#error:not([hidden])")
    # The answer came; only its map failed: the answer stays, beside the reason.
    assert page.inner_text("#error").startswith(f"no map, only the answer: {photo.name}: the server answered 502")
    assert page.get_attribute("#timing", "data-input") == photo.name
    assert page.locator("#bars li").count() == len(CLASS_NAMES) and page.inner_text("#label") != ""
    context.close()


def test_an_upload_the_server_never_answers_is_given_up_with_a_reason(browser, server, real_data_dir, tmp_path):
    context = browser.new_context()
    page = context.new_page()
    page.clock.install()  # the page's time limits run on this clock, moved on by the test
    page.goto(server)
    page.wait_for_function("document.querySelector('#model').textContent.startsWith('run ')")
    held = []
    page.route("**/v1/predict*", lambda route: held.append(route))  # a server that takes the photo, then hangs
    photo, = photo_files(real_data_dir, tmp_path, 1)
    with photo.open("ab") as padded:  # a larger photo is given longer: 39 s more for 640 KB (a JPEG reader stops
        padded.write(b"\0" * 640_000)  # at its end marker, and this server never reads it)
    pick(page, photo)
    page.wait_for_function("document.body.classList.contains('busy')")
    wait_until(page, lambda: held)  # the page has sent it
    limit_s = 30 + photo.stat().st_size / 16384  # 30 s, and the time to send the photo at 16 KiB/s
    page.clock.run_for(int(1000 * limit_s) - 5000)  # the clock also runs on by itself, so a margin
    assert page.is_hidden("#error") and page.inner_text("#status") == f"classifying {photo.name}…"
    page.clock.run_for(10000)
    page.wait_for_selector("#error:not([hidden])")
    shown_s = math.floor(limit_s + 0.5)  # as JavaScript's Math.round
    assert page.inner_text("#error") == (f"{photo.name}: the server did not answer in {shown_s} s: busy or stuck? "
                                         "try again")
    assert page.inner_text("#status") == "" and page.evaluate("!document.body.classList.contains('busy')")
    assert len(held) == 1  # given up, not asked again
    context.close()


def drop_file(page, selector: str, data: bytes, name: str) -> None:
    """Drop a file on an element, as a browser does with a file dragged from the desktop."""
    dropped = page.evaluate_handle("""([data, name]) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, {type: "image/png"}));
        return transfer;
    }""", [base64.b64encode(data).decode(), name])
    page.dispatch_event(selector, "drop", {"dataTransfer": dropped})


def test_on_a_phone_in_an_older_browser_answers_come_into_sight(browser, server, tmp_path):
    context = browser.new_context(viewport={"width": 360, "height": 640})  # panels stacked: the answer far below
    context.add_init_script("delete AbortSignal.timeout")  # as in Safari before 16
    page = context.new_page()
    page.goto(server)
    page.wait_for_function("document.querySelector('#model').textContent.startsWith('run ')")
    in_sight = "(selector) => { const box = document.querySelector(selector).getBoundingClientRect(); " \
               "return box.top >= 0 && box.bottom <= innerHeight; }"

    drop_file(page, "#file-input", encode(garment()), "dropped.png")  # on the file input, not the box
    page.wait_for_selector('#timing[data-input="dropped.png"]')
    assert page.eval_on_selector("#file-input", "input => [...input.files].map((f) => f.name)") == ["dropped.png"]
    assert page.evaluate(in_sight, "#label")
    assert page.inner_text("#drawn") == "—"  # the answer under the pad is a drawing's alone

    pad = page.locator("#pad")
    pad.scroll_into_view_if_needed()
    box = pad.bounding_box()
    page.mouse.move(box["x"] + 60, box["y"] + 60)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 200, steps=8)
    page.mouse.up()
    page.wait_for_selector('#timing[data-input="drawing.png"]')
    assert page.eval_on_selector("#file-input", "input => input.files.length") == 0  # the photo is gone
    assert page.evaluate(in_sight, "#drawn") and not page.evaluate(in_sight, "#label")
    assert page.inner_text("#drawn") == page.inner_text("#label") != ""
    page.wait_for_selector('#evidence[data-input="drawing.png"]')  # its map asked for too: no request is left

    # Clear tapped in the middle of a stroke (a finger, while a pen draws) ends it: nothing more is drawn or sent.
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.mouse.move(box["x"] + 60, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 60, steps=8)
    page.evaluate("document.querySelector('#clear').click()")
    page.mouse.move(box["x"] + 140, box["y"] + 250, steps=8)
    page.mouse.up()
    page.wait_for_timeout(300)  # where a request would have gone out by now
    darkest = page.evaluate("""() => {
        const data = document.querySelector('#pad').getContext('2d').getImageData(0, 0, 280, 280).data;
        let darkest = 255;
        for (let i = 0; i < data.length; i += 4) darkest = Math.min(darkest, data[i]);
        return darkest;
    }""")
    assert darkest == 255 and not [url for url in requests if "/v1/predict" in url]
    context.close()


def test_the_map_is_asked_for_with_the_input_the_model_saw_not_the_photo_again(page, server, real_data_dir, tmp_path):
    photo, = photo_files(real_data_dir, tmp_path, 1)
    original = photo.read_bytes()
    # The answer the page will get, asked for first: its request is answered with it (an intercepted request's body
    # holds no file to send on).
    answer = httpx.post(f"{server}/v1/predict?top_k=10&include_pixels=true", files={"files": (photo.name, original)})
    maps = {}

    def answer_then_change(route):  # the file changes under the browser once its answer is given, before the map's
        if "explain=true" not in route.request.url:
            photo.write_bytes(original + b"\0" * 100)
            os.utime(photo, (1, 1))
            route.fulfill(json=answer.json())
        elif route.request.headers["content-type"] == "application/json":
            response = route.fetch()
            maps[route.request] = response.json()
            route.fulfill(response=response)
        else:  # a file, sent on as it is
            maps[route.request] = None
            route.continue_()

    page.route("**/v1/predict*", answer_then_change)
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(f'#evidence[data-input="{photo.name}"]')
    assert page.is_hidden("#error")
    (mapped, map_answer), = maps.items()
    pixels = np.array(answer.json()["predictions"][0]["pixels"])
    assert mapped.headers["content-type"] == "application/json"
    assert len(mapped.post_data) < 4 * 28 * 28 + 20  # at most "255," a pixel, whatever the photo's size
    assert mapped.post_data_json == {"inputs": [np.rint(255 * pixels).astype(int).ravel().tolist()]}
    # The same map as for the photo itself (its input's pixels were made from floats, the JSON's from integers).
    direct = httpx.post(f"{server}/v1/predict?top_k=1&explain=true", files={"files": (photo.name, original)}).json()
    assert np.allclose(map_answer["predictions"][0]["evidence"], direct["predictions"][0]["evidence"], atol=1e-5)
    # An input whose brightest grey level is 1 goes as floats: as integers the server would refuse it as a [0, 1]
    # mask that lost its decimal points.
    faint = np.zeros((28, 28))
    faint[8:20, 10:18] = round(1 / 255, 4)  # as the answer's pixels give it
    explain = "(pixels) => explain(pixels, $('file-input').files[0], 'x.npy', new AbortController().signal)"
    explained = page.evaluate(explain, faint.tolist())
    assert np.array(explained["predictions"][0]["evidence"]).shape == (28, 28)
    sent = json.loads(list(maps)[-1].post_data)["inputs"][0]
    assert sorted(set(sent)) == [0, 1 / 255]
    # One off the 256 levels (an .npy of any floats) is asked for with its file, as its answer was: the map is of
    # that very input, not of the nearest levels.
    half = io.BytesIO()
    np.save(half, np.full((28, 28), 0.5, np.float32))
    explained = page.evaluate("""([data, pixels]) => {
        const file = new File([Uint8Array.from(atob(data), (c) => c.charCodeAt(0))], "half.npy");
        return explain(pixels, file, file.name, new AbortController().signal);
    }""", [base64.b64encode(half.getvalue()).decode(), np.full((28, 28), 0.5).tolist()])
    assert explained["predictions"][0]["input"] == "half.npy"
    assert list(maps)[-1].headers["content-type"].startswith("multipart/form-data")
    # A file the browser can no longer read (changed since it was picked, as this one now is, or a dropped folder) is
    # named, not blamed on the server.
    page.evaluate("classify($('file-input').files[0], $('file-input').files[0].name, 'photo')")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == (f"cannot read {photo.name}: a folder, or a file changed or removed since it "
                                         "was picked")


def test_the_unsure_line_gives_the_servers_own_threshold(browser, page, real_run_dir, tmp_path):
    assert page.text_content("#unsure") == "The model is unsure: no class reaches 50%."  # the default, 0.5
    process, base = start_server(real_run_dir, tmp_path / "serve.log", options=("--unsure-below", "0.8"))
    context = browser.new_context()
    try:
        strict = context.new_page()
        strict.goto(base)
        strict.wait_for_function("document.querySelector('#model').textContent.startsWith('run ')")
        assert strict.text_content("#unsure") == "The model is unsure: no class reaches 80%."
    finally:
        context.close()
        process.terminate()
        process.wait(timeout=60)


def test_a_page_from_an_allowed_origin_reads_the_apis_answers_in_a_browser_another_cannot(browser, server,
                                                                                        real_run_dir, tmp_path):
    import functools
    import http.server
    import threading

    (tmp_path / "index.html").write_text("<!doctype html><title>another app</title>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as elsewhere:
        threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
        origin = f"http://127.0.0.1:{elsewhere.server_address[1]}"  # another port: another origin
        process, api = start_server(real_run_dir, tmp_path / "serve.log", options=("--allow-origin", origin))
        context = browser.new_context()
        try:
            app = context.new_page()
            app.goto(f"{origin}/index.html")
            call = """async (api) => {
                try {
                    const response = await fetch(`${api}/v1/predict`, {method: "POST",
                        headers: {"Content-Type": "application/json"},  // a preflight first, for JSON
                        body: JSON.stringify({inputs: [Array(784).fill(0.5)]})});
                    return [response.status, (await response.json()).predictions.length];
                } catch (err) { return String(err); }
            }"""
            assert app.evaluate(call, api) == [200, 1]
            assert app.evaluate(call, server) == "TypeError: Failed to fetch"  # a server that allows no page
        finally:
            context.close()
            process.terminate()
            process.wait(timeout=60)
            elsewhere.shutdown()


def test_the_page_works_under_a_reverse_proxys_prefix(browser, real_run_dir, tmp_path):
    """Mounted at /fmnist/, as a proxy that strips the prefix presents it: the page's own files and the API found."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from fmnist.serve import create_app

    inner = create_app(real_run_dir)
    outer = Starlette(routes=[Mount("/fmnist", app=inner)], lifespan=lambda _: inner.router.lifespan_context(inner))
    with uvicorn_in_thread(outer) as port:
        context = browser.new_context()
        try:
            page = context.new_page()
            requested = []
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"http://127.0.0.1:{port}/fmnist/")
            page.wait_for_function("document.querySelector('#model').textContent.startsWith('run ')")
            photo = tmp_path / "shirt.png"
            photo.write_bytes(encode(garment()))
            page.set_input_files("#file-input", str(photo))
            page.wait_for_selector('#evidence[data-input="shirt.png"]')
            assert page.locator("#bars li").count() == len(CLASS_NAMES)
            assert all(url.startswith((f"http://127.0.0.1:{port}/fmnist/", "blob:", "data:")) for url in requested), \
                requested
        finally:
            context.close()


def test_a_runs_report_reads_on_a_phone(browser, tiny_run_dir):
    # The pages fmnist writes (html_page.page), as a phone shows them: at its own width, not shrunk from 980 px.
    context = browser.new_context(viewport={"width": 390, "height": 800}, is_mobile=True, device_scale_factor=2)
    try:
        page = context.new_page()
        page.goto((tiny_run_dir / artifacts.REPORT_HTML).as_uri())
        assert page.evaluate("window.innerWidth") == 390
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # wide pictures scroll in their own boxes
        accuracy = page.locator("th[scope=row]:text-is('test accuracy') + td").bounding_box()
        assert accuracy["x"] + accuracy["width"] <= 390  # the headline's value in sight, its row name wrapped
        figure = page.locator(".figure img").first
        # At its own size, a confusion matrix's counts legible, scrolled to.
        assert figure.bounding_box()["width"] == figure.evaluate("img => img.naturalWidth") > 390
    finally:
        context.close()
