"""The workbench page in headless Chromium (Debian's /usr/bin/chromium through playwright): the
page loads, the embedded Rerun canvas renders something, and a click on the frame in Correct
moves the selected joint (visible in the next screenshot). Screenshots go to artifacts/."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.browser

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    from app.sample import build_synthetic
    from test_app import AppProcess

    root = tmp_path_factory.mktemp("browser") / "ds"
    build_synthetic(root, seeds=(0,), num_frames=12)
    a = AppProcess(root, author="browser").start()
    yield a
    a.stop()


@pytest.fixture(scope="module")
def page(app, tmp_path_factory):
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = ctx.new_page()
        pg.set_default_timeout(90_000)
        pg.goto(app.url)
        yield pg
        ctx.close()
        browser.close()


def test_page_loads_and_rerun_canvas_is_not_blank(page):
    page.wait_for_selector("#vipa-episode")
    page.get_by_role("tab", name="Inspect").click()
    canvas = page.wait_for_selector("#vipa-rerun canvas", state="attached")
    # the viewer needs a moment to load the wasm and the recording; wait for the picture to settle
    deadline = time.time() + 90
    shot, busy = None, 0.0
    while time.time() < deadline:
        time.sleep(3)
        shot = png(page.locator("#vipa-rerun").screenshot())
        bg = np.median(shot.reshape(-1, 3), axis=0)
        busy = float((np.abs(shot - bg).sum(-1) > 40).mean())
        if busy > 0.05:
            break
    (ARTIFACTS / "browser_inspect_rerun.png").write_bytes(page.locator("#vipa-rerun").screenshot())
    page.screenshot(path=str(ARTIFACTS / "browser_page.png"), full_page=True)
    box = canvas.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100, f"Rerun canvas not laid out: {box}"
    assert busy > 0.05, f"Rerun canvas looks blank ({busy:.3%} of pixels differ from the background)"
    # the app put the viewer's time cursor on frame 0 of the recording it sent
    shown = page.wait_for_function("() => window.__vipaShown", timeout=30_000).json_value()
    assert shown[0].startswith("synthetic_00-") and shown[1] == 0


def test_worst_frame_click_moves_the_viewer_cursor(page):
    page.get_by_role("tab", name="Align").click()
    cell = page.locator('#vipa-worst [data-testid="cell-0-0"]').first
    cell.wait_for(state="visible")
    frame = int(cell.inner_text().strip())
    cell.click()
    page.wait_for_function("(f) => window.__vipaShown && window.__vipaShown[1] === f", arg=frame, timeout=30_000)
    assert page.locator("#vipa-frame input[type=number]").first.input_value() == str(frame)
    page.get_by_role("tab", name="Inspect").click()
    time.sleep(2)
    (ARTIFACTS / "browser_inspect_jump.png").write_bytes(page.locator("#vipa-rerun").screenshot())


def test_click_on_the_frame_moves_the_joint(page, app):
    page.get_by_role("tab", name="Correct").click()
    img = page.locator("#vipa-frame-image img").first
    img.wait_for(state="visible")
    time.sleep(1.0)
    c = app.client()
    frame = int(page.locator("#vipa-frame input[type=number]").first.input_value())
    before = c.predict("synthetic_00", frame, "right", "wrist", api_name="/joint")
    nat_w, nat_h = page.evaluate("(e) => [e.naturalWidth, e.naturalHeight]", img.element_handle())
    box = img.bounding_box()
    shot0 = png(img.screenshot())
    (ARTIFACTS / "browser_correct_before.png").write_bytes(img.screenshot())
    # move the wrist 30 px to the left of where it is (inside the image)
    u_target = max(5.0, before["uv"][0] - 30.0) if before["uv"][0] > 40 else before["uv"][0] + 30.0
    v_target = before["uv"][1]
    src0 = img.get_attribute("src")
    # episode pixel -> picture pixel (the app magnifies small frames by an integer factor) ->
    # screen position (the picture is scaled down to fit its box, if at all, and centred)
    mag = nat_w / c.predict("synthetic_00", api_name="/episode_info")["width"]
    k = min(1.0, box["width"] / nat_w, box["height"] / nat_h) * mag
    ox, oy = (box["width"] - nat_w * k / mag) / 2, (box["height"] - nat_h * k / mag) / 2
    img.click(position={"x": ox + u_target * k, "y": oy + v_target * k})
    page.wait_for_function("([sel, old]) => { const e = document.querySelector(sel); return e && e.src !== old; }",
                           arg=["#vipa-frame-image img", src0])
    time.sleep(0.5)
    img = page.locator("#vipa-frame-image img").first
    shot1 = png(img.screenshot())
    (ARTIFACTS / "browser_correct_after.png").write_bytes(img.screenshot())
    after = c.predict("synthetic_00", frame, "right", "wrist", api_name="/joint")
    assert abs(after["uv"][0] - u_target) <= 1.5 / k + 1
    assert abs(after["uv"][1] - v_target) <= 1.5 / k + 1

    # the projected point moved in the picture: the new position changed, in screen pixels
    h, w = shot1.shape[:2]
    dpr = w / box["width"]

    def window(a: np.ndarray, u: float, v: float, r: int = 4) -> np.ndarray:
        x, y = int((ox + u * k) * dpr), int((oy + v * k) * dpr)
        return a[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1]

    changed_new = np.abs(window(shot1, *after["uv"]) - window(shot0, *after["uv"])).sum(-1).max()
    assert changed_new > 60, "no visible change where the joint was moved to"


def test_keyboard_undo_and_redo(page, app):
    """Ctrl+Z / Ctrl+Y outside text fields click the undo / redo buttons."""
    c = app.client()
    frame = int(page.locator("#vipa-frame input[type=number]").first.input_value())
    moved = c.predict("synthetic_00", frame, "right", "wrist", api_name="/joint")["uv"]
    hist = len(c.predict("synthetic_00", api_name="/history"))
    page.locator("#vipa-frame-image").first.hover()
    page.mouse.click(5, 5)  # focus the page body, not an input
    page.keyboard.press("Control+z")
    deadline = time.time() + 30
    while time.time() < deadline and len(c.predict("synthetic_00", api_name="/history")) == hist:
        time.sleep(0.5)
    undone = c.predict("synthetic_00", frame, "right", "wrist", api_name="/joint")["uv"]
    assert undone != pytest.approx(moved, abs=1e-3)
    page.keyboard.press("Control+y")
    deadline = time.time() + 30
    while time.time() < deadline and len(c.predict("synthetic_00", api_name="/history")) == hist + 1:
        time.sleep(0.5)
    assert c.predict("synthetic_00", frame, "right", "wrist", api_name="/joint")["uv"] == pytest.approx(moved, abs=1e-3)
