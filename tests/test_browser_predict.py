"""The Predict tab in headless Chromium with the bundled checkpoint (checkpoints/tiny_sample): a
synthetic episode (it has depth: "RGB + depth"), a real clip annotated into the dataset (no depth:
"RGB only") and an uploaded real frame (no depth: "RGB only", drawn over the upload, compared with
nothing). Each answer names the inputs the model used; the prediction viewer shows a picture.
Screenshots go to artifacts/predict_*.png."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from test_browser import ARTIFACTS, CHROMIUM, open_page, png

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "checkpoints" / "tiny_sample"
REAL_CLIP = REPO / "samples" / "real_clips" / "egoloc" / "jar_shelf.mp4"  # 32 frames
UPLOAD_CLIP = REPO / "samples" / "real_clips" / "egoloc" / "jar_desk.mp4"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    if not (CHECKPOINT / "model.safetensors").is_file():
        pytest.skip("no bundled checkpoint")
    from annotators.batch import annotate_to_dataset
    from app.sample import build_synthetic
    from test_app import AppProcess

    root = tmp_path_factory.mktemp("predict") / "ds"
    build_synthetic(root, seeds=(0,), num_frames=12)
    report = annotate_to_dataset([REAL_CLIP], root, None, workers=1)
    assert not report.failed, [o.error for o in report.failed]
    a = AppProcess(root, author="predict", extra_args=("--checkpoint", str(CHECKPOINT))).start()
    # the checkpoint loads in the background: the API waits for it, so the page opens with it loaded
    res = a.client().predict("synthetic_00", 2, "", api_name="/predict")
    assert "(RGB + depth)" in res["message"], res["message"]
    yield a
    a.stop()


@pytest.fixture(scope="module")
def page(app):
    with open_page(app.url, height=1100, timeout_ms=120_000) as pg:
        pg.wait_for_selector("#vipa-episode")
        pg.wait_for_function("() => document.querySelector('#vipa-episode input')?.value")
        yield pg


@pytest.fixture(scope="module")
def upload_png(tmp_path_factory) -> Path:
    """Frame 100 of a real clip as a PNG (as a user would upload a photo)."""
    import cv2

    cap = cv2.VideoCapture(str(UPLOAD_CLIP))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 100)
    ok, bgr = cap.read()
    cap.release()
    assert ok
    out = tmp_path_factory.mktemp("upload") / "real_frame.png"
    cv2.imwrite(str(out), bgr)
    return out


def choose_episode(page, episode_id: str) -> None:
    box = page.locator("#vipa-episode input").first
    box.click()
    box.fill(episode_id)
    page.locator(f"ul[role=listbox] li[aria-label='{episode_id}'], ul[role=listbox] li:has-text('{episode_id}')"
                 ).first.click()
    page.wait_for_function("(e) => document.querySelector('#vipa-episode input')?.value === e", arg=episode_id)
    time.sleep(1.0)


def predict_and_shoot(page, name: str, previous: str) -> tuple[str, float]:
    """Click predict; wait for a new answer; screenshot the prediction viewer once it settles.
    Returns (the answer's text, the fraction of viewer pixels that differ from its background)."""
    page.get_by_role("tab", name="Predict").click()
    page.get_by_role("button", name="predict wrist trajectory").click()
    out = page.locator("text=/predicted waypoints/").last
    deadline = time.time() + 180
    text = ""
    while time.time() < deadline:
        if out.count() and out.inner_text() != previous:
            text = out.inner_text()
            break
        time.sleep(0.5)
    if not text:
        page.screenshot(path=str(ARTIFACTS / f"predict_{name}_failed.png"), full_page=True)
    assert text, f"no prediction answer for {name}"
    viewer = page.locator("#vipa-pred-rerun")
    viewer.wait_for(state="visible")
    busy, deadline = 0.0, time.time() + 90
    while time.time() < deadline:
        time.sleep(3)
        shot = png(viewer.screenshot())
        bg = np.median(shot.reshape(-1, 3), axis=0)
        busy = float((np.abs(shot - bg).sum(-1) > 40).mean())
        if busy > 0.05:
            break
    (ARTIFACTS / f"predict_{name}.png").write_bytes(viewer.screenshot())
    page.screenshot(path=str(ARTIFACTS / f"predict_{name}_page.png"), full_page=True)
    return text, busy


def test_predict_on_a_synthetic_episode_uses_rgb_and_depth(page):
    text, busy = predict_and_shoot(page, "synthetic", "")
    assert "(RGB + depth)" in text and "demonstrated" in text, text
    assert busy > 0.05, f"prediction viewer looks blank ({busy:.2%})"
    page.shown_text = text


def test_predict_on_a_real_clip_uses_rgb_only(page, app):
    ids = [row["episode"] for row in app.client().predict(api_name="/episodes")]
    real = [v for v in ids if "jar_shelf" in v]
    assert real, "the annotated real clip is not in the gallery"
    eid = real[0]
    choose_episode(page, eid)
    text, busy = predict_and_shoot(page, "real_clip", getattr(page, "shown_text", ""))
    assert "(RGB only)" in text, text
    assert busy > 0.05, f"prediction viewer looks blank ({busy:.2%})"
    page.shown_text = text


def test_predict_on_an_upload_without_depth(page, upload_png):
    page.get_by_role("tab", name="Predict").click()
    page.locator("#vipa-upload input[type=file]").set_input_files(str(upload_png))
    time.sleep(2.0)
    text, busy = predict_and_shoot(page, "upload", getattr(page, "shown_text", ""))
    assert "uploaded frame (RGB only)" in text and "no demonstration" in text, text
    assert "demonstrated" not in text  # nothing compared with the selected episode's wrist
    assert busy > 0.05, f"prediction viewer looks blank ({busy:.2%})"
    assert page.outside == []
    page.shown_text = text


def test_predict_on_an_upload_with_depth(page):
    """The bundled real TUM RGB-D frame uploaded with its 16-bit depth PNG (0.2 mm per count) and K."""
    tum = REPO / "samples" / "rgbd_tum"
    page.get_by_role("tab", name="Predict").click()
    if page.locator("#vipa-upload input[type=file]").count() == 0:  # the previous test's upload is still shown
        page.locator("#vipa-upload button[aria-label='Clear']").first.click()
    page.locator("#vipa-upload input[type=file]").set_input_files(str(tum / "TUM_color.png"))
    page.get_by_text("depth for the uploaded frame").click()
    page.locator("#vipa-upload-depth input[type=file]").set_input_files(str(tum / "TUM_depth.png"))
    unit = page.get_by_label("depth unit (metres per count; 0.001 = millimetres)")
    unit.fill("0.0002")
    page.locator("#vipa-upload-K textarea, #vipa-upload-K input").first.fill("525 525 319.5 239.5")
    time.sleep(2.0)
    text, busy = predict_and_shoot(page, "upload_depth", getattr(page, "shown_text", ""))
    assert "uploaded frame (RGB + depth)" in text and "the given camera" in text, text
    assert busy > 0.05, f"prediction viewer looks blank ({busy:.2%})"
