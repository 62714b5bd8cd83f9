"""The explorer page in a real browser: Debian's headless Chromium driven by Playwright.

Skipped, saying why, without playwright or /usr/bin/chromium; with
VAECLI_REQUIRE_BROWSER=1 (as in CI) they fail instead, so a missing browser
cannot pass silently. One browser serves every test.
"""

import io

import numpy as np
import pytest
import torch

from tests.conftest import make_run, write_dataset
from vaecli.core.data import load_dataset
from vaecli.views import explore

TOLERANCE = 1e-4  # the bar: the page's pixels equal the library's decode within this


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_dataset(root / "MNIST" / "raw")
    return load_dataset("mnist", root)


@pytest.fixture
def open_page(browser, tmp_path):
    """Write a page for `runs` and open it from disk; fails the test on any script error or request."""
    pages = []

    def opener(runs, data=None, width=1100):
        path = explore.save(explore.page(runs, data), tmp_path / "explore.html")
        page = browser.new_page(viewport={"width": width, "height": 700})
        errors, requests = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.resolve().as_uri())
        page.wait_for_function("window.vaecli !== undefined", timeout=10_000)
        pages.append((page, errors, requests, path))
        return page

    yield opener
    for page, errors, requests, path in pages:
        page.close()
        assert errors == [], errors
        assert requests == [path.resolve().as_uri()], requests  # the file itself, nothing else


def page_state(page, run_index=0):
    z = page.evaluate("vaecli.getZ()")
    pixels = np.array(page.evaluate(f"vaecli.pixels({run_index})"))
    return np.array(z, dtype=np.float32), pixels


def python_decode(run, z):
    with torch.no_grad():
        return run.model.decode_mean(torch.from_numpy(z)[None])[0].double().numpy()


def drawn(page, selector):
    """The grey levels the page painted into a decoded-image canvas, as 0..1."""
    values = page.evaluate(
        """sel => { const c = document.querySelector(sel);
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            return Array.from({length: d.length / 4}, (_, i) => d[4 * i]); }""",
        selector,
    )
    return np.array(values) / 255


def test_pointer_over_the_plane_decodes_what_python_decodes(open_page, tmp_path, tiny_data):
    run = make_run(tmp_path, latent_dim=2, hidden_layers=(512, 256))  # the default decoder, full size
    page = open_page([run], tiny_data)
    plane = page.locator("canvas.plane").bounding_box()
    seen = []
    for fx, fy in ((0.7, 0.2), (0.3, 0.6), (0.55, 0.45)):
        page.mouse.move(plane["x"] + fx * plane["width"], plane["y"] + fy * plane["height"])
        z, pixels = page_state(page)
        assert np.abs(pixels - python_decode(run, z)).max() < TOLERANCE
        assert np.abs(drawn(page, "canvas.digit") - pixels).max() <= 0.5 / 255 + 1e-9
        seen.append((z, pixels))
    (z1, p1), (z2, p2), _ = seen
    assert z1[0] > 0 and z1[1] > 0 and z2[0] < 0 and z2[1] < 0  # right is +z1, up is +z2
    assert np.abs(p1 - p2).max() > 0.01  # moving changed the image


def test_click_pins_and_escape_releases(open_page, tmp_path):
    page = open_page([make_run(tmp_path)])
    plane = page.locator("canvas.plane").bounding_box()
    at = lambda fx, fy: (plane["x"] + fx * plane["width"], plane["y"] + fy * plane["height"])  # noqa: E731
    page.mouse.click(*at(0.6, 0.3))
    pinned = page.evaluate("vaecli.getZ()")
    page.mouse.move(*at(0.2, 0.8))
    assert page.evaluate("vaecli.getZ()") == pinned and page.evaluate("vaecli.pinned()")
    assert "pinned" in page.locator(".readout").inner_text()
    page.keyboard.press("Escape")
    page.mouse.move(*at(0.2, 0.8))
    assert page.evaluate("vaecli.getZ()") != pinned and not page.evaluate("vaecli.pinned()")


def test_sliders_follow_kl_and_decode_what_python_decodes(open_page, tmp_path, tiny_data):
    run = make_run(tmp_path, latent_dim=20, hidden_layers=(512, 256))
    with torch.no_grad():
        run.model.mu.weight[:5] *= 20  # dimensions 1..5 clearly in use
        run.model.mu.weight[5:].zero_()  # dimensions 6..20 carry nothing: inactive
        run.model.mu.bias[5:].zero_()
        run.model.logvar.weight[5:].zero_()
        run.model.logvar.bias[5:].zero_()
    page = open_page([run], tiny_data)
    kl = explore.encode_test_set(run, tiny_data).kl.numpy()
    order = [int(d) for d in page.locator("input[type=range]").evaluate_all("s => s.map(e => e.dataset.dim)")]
    assert order[:5] == list(np.argsort(-kl[:5], kind="stable"))
    # 0-based like --dims and the traverse figure: the slider of dimension d reads z[d]
    labels = page.locator(".slider label").all_inner_texts()
    assert labels == [f"z[{d}]" for d in order]
    assert page.locator(".slider.inactive").count() == 15 == int((kl < explore.INACTIVE_KL).sum())

    before = page_state(page)[1]
    top = page.locator("input[type=range]").first
    top.focus()
    page.keyboard.press("End")  # the slider to its maximum, as a user would
    z, pixels = page_state(page)
    assert z[order[0]] == pytest.approx(4) and np.count_nonzero(z) == 1
    assert np.abs(pixels - python_decode(run, z)).max() < TOLERANCE
    assert np.abs(pixels - before).max() > 0.01

    page.click("#reset")
    assert page.evaluate("vaecli.getZ()") == [0] * 20
    page.click("#random")
    z, pixels = page_state(page)
    mu = run.model.encode(tiny_data.test.images.float())[0].detach().numpy()
    assert np.abs(mu - z).max(1).min() < 1e-6  # the mean code of one test image
    assert np.abs(pixels - python_decode(run, z)).max() < TOLERANCE
    assert "test image" in page.locator(".sample").inner_text()


def test_several_runs_decode_the_same_z(open_page, tmp_path, tiny_data):
    runs = [make_run(tmp_path / "a", seed=1), make_run(tmp_path / "b", seed=2, hidden_layers=(64,))]
    page = open_page(runs, tiny_data)
    assert page.locator("canvas.plane").count() == 2 and page.locator("article.run").count() == 2
    second = page.locator("canvas.plane").nth(1).bounding_box()
    page.mouse.move(second["x"] + 0.8 * second["width"], second["y"] + 0.3 * second["height"])
    z = np.array(page.evaluate("vaecli.getZ()"), dtype=np.float32)
    for i, run in enumerate(runs):
        pixels = page_state(page, i)[1]
        assert np.abs(pixels - python_decode(run, z)).max() < TOLERANCE
    assert "code from" in page.locator(".controls").inner_text()


def test_page_without_test_set_works_and_says_so(open_page, tmp_path):
    page = open_page([make_run(tmp_path, latent_dim=5)])
    assert "no MNIST test set" in page.locator(".note").inner_text()
    assert page.locator("#random").is_disabled()
    assert page.locator(".slider").count() == 5 and page.locator(".slider.inactive").count() == 0


def test_screenshot_is_not_blank(open_page, tmp_path, tiny_data):
    from PIL import Image

    run = make_run(tmp_path)
    page = open_page([run], tiny_data)
    page.mouse.click(*_centre(page.locator("canvas.plane").bounding_box(), 0.65, 0.35))
    shot = tmp_path / "explore.png"
    page.screenshot(path=shot, full_page=True)
    image = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("L"), dtype=float)
    assert image.shape[1] >= 1000 and image.std() > 20  # text, plane and image, not one flat colour
    digit = np.asarray(Image.open(io.BytesIO(page.locator("canvas.digit").screenshot())).convert("L"), dtype=float)
    assert digit.std() > 1  # the decoded image is drawn, not an empty canvas


def _centre(box, fx, fy):
    return box["x"] + fx * box["width"], box["y"] + fy * box["height"]
