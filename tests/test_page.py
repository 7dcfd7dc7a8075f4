"""The web page in a real headless browser (Debian's Chromium driven by Playwright) against a real server."""

import os
import shutil

import httpx
import numpy as np
import pytest

from conftest import start_server
from fmnist.data import CLASS_NAMES, load_dataset
from samples import photo_like

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


def test_uploading_a_real_test_image_shows_its_label(page, server, real_data_dir, tmp_path):
    dataset = load_dataset(real_data_dir)
    candidates = dataset.x_test[:40]
    answers = httpx.post(f"{server}/v1/predict", json={"inputs": candidates.reshape(40, -1).tolist()}).json()
    confident = [i for i, a in enumerate(answers["predictions"])
                 if a["top"][0]["index"] == dataset.y_test[i] and a["top"][0]["probability"] > 0.9]
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
    assert page.is_hidden("#error")

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("FMNIST_SCREENSHOT"):  # how the README's picture is made
        shutil.copy(shot, os.environ["FMNIST_SCREENSHOT"])


def test_drawing_on_the_canvas_shows_probabilities(page):
    box = page.locator("#pad").bounding_box()
    x, y = box["x"], box["y"]
    page.mouse.move(x + 70, y + 40)
    page.mouse.down()
    for px, py in ((70, 240), (125, 240), (140, 110), (155, 240), (210, 240), (210, 40), (70, 40)):
        page.mouse.move(x + px, y + py, steps=6)
    page.mouse.up()
    page.wait_for_selector('#timing[data-input="drawing.png"]')
    bars = bar_probabilities(page)
    assert list(bars) == list(CLASS_NAMES) and sum(bars.values()) == pytest.approx(1.0, abs=0.01)
    assert page.inner_text("#label").split(" ")[0] in {name.split(" ")[0] for name in CLASS_NAMES}
    assert seen_brightness(page) > 0.05

    page.click("#clear")
    assert page.locator("#bars li").count() == 0
    assert seen_brightness(page) == 0 and evidence_tints(page) == (0, 0) and page.inner_text("#timing") == ""
    assert np.isclose(page.evaluate("document.querySelector('#pad').getContext('2d').getImageData(140, 140, 1, 1)"
                                    ".data[0]"), 255)


def test_an_answer_overtaken_by_a_newer_upload_is_not_shown(page, real_data_dir, tmp_path):
    held = []
    page.route("**/v1/predict*", lambda route: held.append(route))  # requests wait here until the test lets them go
    dataset = load_dataset(real_data_dir)
    photos = []
    for index in (0, 1):
        data, name = photo_like(dataset.x_test[index], seed=index)
        photos.append(tmp_path / f"{index}-{name}")
        photos[-1].write_bytes(data)
        page.set_input_files("#file-input", str(photos[-1]))
        for _ in range(1000):  # at most 20 s for the page to send it
            if len(held) > index:
                break
            page.wait_for_timeout(20)
    assert len(held) == 2, held
    older, newer = held
    newer.continue_()
    page.wait_for_selector(f'#timing[data-input="{photos[1].name}"]')
    with page.expect_response(lambda response: response.request == older.request):
        older.continue_()
    page.wait_for_timeout(300)  # time for the page to draw the older answer, were it to draw it
    assert page.get_attribute("#timing", "data-input") == photos[1].name
    assert len(held) == 3 and "explain=true" in held[2].request.url  # only the newer upload asks for its map
    held[2].continue_()
    page.wait_for_selector(f'#evidence[data-input="{photos[1].name}"]')


def test_a_file_that_is_not_an_image_shows_the_servers_reason(page, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    page.set_input_files("#file-input", str(notes))
    page.wait_for_selector("#error:not([hidden])")
    assert "notes.txt is not a supported image" in page.inner_text("#error")
