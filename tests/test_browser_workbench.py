"""The workbench's issue-#11 features in headless Chromium (Debian's /usr/bin/chromium through
playwright), on a dataset with a synthetic RGB-D episode and a real clip (no depth), the app
started with the committed simulator results: a real clip in the gallery with its quality
columns, the Align tab's sentence when there is no depth, rollouts from docs/sim_results and
from a folder without results, object boxes named by label, undo rows that say what was undone,
a non-image upload answered in a sentence, and the login on a non-loopback host. The typed-frame
and fast-sequence cases of item 1 are in tests/test_browser.py. Screenshots go to artifacts/."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

playwright_sync = pytest.importorskip("playwright.sync_api")

from test_browser import ARGS, ARTIFACTS, CHROMIUM, log_in_wrong_then_right  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "samples" / "real_clips" / "mediapipe_samples" / "hand_reach.mp4"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    pytest.importorskip("mediapipe")
    from annotators.batch import annotate_to_dataset
    from annotators.pipeline import AnnotateConfig
    from app.sample import build_synthetic

    root = tmp_path_factory.mktemp("wbbrowser") / "ds"
    build_synthetic(root, seeds=(0,), num_frames=12)
    report = annotate_to_dataset([CLIP], root, AnnotateConfig(decode={"max_frames": 10}))
    assert not report.failed, report.failed
    return root


def start_app(root: Path, *extra: str):
    from test_app import AppProcess

    return AppProcess(root, author="wb", extra_args=extra).start()


@pytest.fixture(scope="module")
def app(dataset):
    a = start_app(dataset, "--rollouts", "docs/sim_results")
    yield a
    a.stop()


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        br = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield br
        br.close()


@pytest.fixture(scope="module")
def page(app, browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(90_000)
    pg.goto(app.url)
    pg.wait_for_function("() => document.querySelector('#vipa-episode input')?.value === 'synthetic_00'")
    yield pg
    ctx.close()


def table_rows(page) -> list[list[str]]:
    """The Browse table's visible cells as text, row by row (columns in TABLE_HEADERS order)."""
    return page.evaluate("""() => {
      const rows = {};
      for (const c of document.querySelectorAll('#vipa-table [data-testid^="cell-"]')) {
        const m = c.getAttribute('data-testid').match(/^cell-(\\d+)-(\\d+)$/);
        if (!m) continue;
        (rows[m[1]] = rows[m[1]] || [])[Number(m[2])] = c.innerText.trim();
      }
      return Object.keys(rows).sort((a, b) => a - b).map(k => rows[k]);
    }""")


def open_episode(page, episode_id: str) -> None:
    page.get_by_role("tab", name="Browse").click()
    page.wait_for_function("(e) => [...document.querySelectorAll('#vipa-table [data-testid$=\"-0\"]')]"
                           ".some(c => c.innerText.trim() === e)", arg=episode_id)
    r = next(i for i, row in enumerate(table_rows(page)) if row and row[0] == episode_id)
    page.locator(f'#vipa-table [data-testid="cell-{r}-0"]').first.click()
    page.wait_for_function("(e) => document.querySelector('#vipa-episode input')?.value === e", arg=episode_id)


def test_a_real_clip_is_in_the_gallery_with_its_quality_columns(page):
    from app.workbench import QUALITY_COLUMNS, TABLE_HEADERS

    page.get_by_role("tab", name="Browse").click()
    page.wait_for_function("() => [...document.querySelectorAll('#vipa-table [data-testid$=\"-0\"]')]"
                           ".some(c => c.innerText.trim() === 'hand_reach')")
    header = page.locator("#vipa-table").inner_text()
    assert all(q in header for q in QUALITY_COLUMNS), header[:300]
    rows = {r[0]: dict(zip(TABLE_HEADERS, r)) for r in table_rows(page) if r}
    real, synth = rows["hand_reach"], rows["synthetic_00"]
    assert 0 < float(real["detection_rate"]) <= 1
    assert float(real["reproj_median_px"]) >= 0
    assert all(re.fullmatch(r"-?[0-9.e-]+", synth[q]) for q in QUALITY_COLUMNS), synth  # every column filled
    page.screenshot(path=str(ARTIFACTS / "browser_wb_gallery.png"), full_page=True)


def test_align_tab_says_why_it_has_no_calibration_plot_without_depth(page):
    open_episode(page, "hand_reach")
    page.get_by_role("tab", name="Align").click()
    page.get_by_text(re.compile(r"no point cloud for this episode \(no depth\), so no calibration residual")).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "browser_wb_align_no_depth.png"), full_page=True)


def test_rollouts_from_the_committed_results(page):
    page.get_by_role("tab", name="Rollouts").click()
    summary = page.locator("#vipa-rollout-summary")
    summary.wait_for()
    text = summary.inner_text()
    assert "sim_results" in text and "%" in text, text[:400]  # success rates of the committed report
    assert "could not be read" not in text
    page.screenshot(path=str(ARTIFACTS / "browser_wb_rollouts.png"), full_page=True)


def test_rollouts_from_a_folder_without_results_and_a_missing_one(dataset, browser, tmp_path):
    empty = tmp_path / "eval_out"
    empty.mkdir()
    a = start_app(dataset, "--rollouts", str(empty))
    try:
        ctx = browser.new_context(viewport={"width": 1200, "height": 800})
        pg = ctx.new_page()
        pg.set_default_timeout(90_000)
        pg.goto(a.url)
        pg.get_by_role("tab", name="Rollouts").click()
        text = pg.locator("#vipa-rollout-summary").inner_text()
        assert "No report.json" in text.replace("`", "") and "vipa sim eval" in text
        pg.screenshot(path=str(ARTIFACTS / "browser_wb_rollouts_empty.png"), full_page=True)
        ctx.close()
    finally:
        a.stop()
    # a folder that is not there: one line, no traceback, no server
    out = subprocess.run([sys.executable, str(REPO / "launch_app.py"), "--data", str(dataset), "--rollouts",
                          str(tmp_path / "nowhere")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == f"--rollouts {tmp_path / 'nowhere'}: no such folder"


def test_object_boxes_are_named_by_label(page, dataset):
    from vipa.data.dataset import Hand3DDataset

    open_episode(page, "synthetic_00")
    page.get_by_role("tab", name="Correct").click()
    page.get_by_text("object box").first.click()  # open the accordion
    dd = page.get_by_label("object")
    dd.click()
    options = [o.inner_text().replace("✓", "").strip() for o in page.locator("ul[role=listbox] li").all()]
    page.screenshot(path=str(ARTIFACTS / "browser_wb_object_names.png"))
    page.keyboard.press("Escape")
    objects = Hand3DDataset.open(dataset).load_episode("synthetic_00").objects
    assert objects and all(o.name and o.name != o.object_id for o in objects)
    assert sorted(options) == sorted(f"{o.name} ({o.object_id})" for o in objects), options


def test_undo_row_says_what_was_undone(page, app):
    page.get_by_role("tab", name="Correct").click()
    page.locator("#vipa-frame-image img").first.wait_for(state="visible")
    c = app.client()
    n = len(c.predict("synthetic_00", api_name="/history"))
    page.locator("#vipa-visibility").click()
    deadline = time.time() + 60
    while time.time() < deadline and len(c.predict("synthetic_00", api_name="/history")) == n:
        time.sleep(0.3)
    page.locator("#vipa-undo").click()
    # the newest history row (the table's first) names the action that was undone
    page.wait_for_function("""() => /^undo: right wrist in frame \\d+: (hidden|visible)$/.test(
        document.querySelector('#vipa-history [data-testid="cell-0-3"]')?.innerText.trim() || '')""", timeout=60_000)
    who = page.locator('#vipa-history [data-testid="cell-0-2"]').first.inner_text().strip()
    assert who == "wb"  # the author, not "anonymous"
    page.screenshot(path=str(ARTIFACTS / "browser_wb_undo_row.png"), full_page=True)


def test_an_upload_that_is_not_an_image_is_answered_in_a_sentence(page, tmp_path):
    bad = tmp_path / "frame.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not an image" * 4)  # a garbled PNG, as in the issue
    page.get_by_role("tab", name="Predict").click()
    page.locator("#vipa-upload input[type=file]").set_input_files(str(bad))
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="predict wrist trajectory").click()
    msg = page.get_by_text(re.compile("is not a readable PNG or JPEG image")).first
    msg.wait_for(timeout=60_000)
    text = msg.inner_text()
    assert "frame.png" in text and "UnidentifiedImageError" not in text and "/tmp" not in text
    assert page.get_by_text("Could not preprocess").count() == 0
    page.screenshot(path=str(ARTIFACTS / "browser_wb_bad_upload.png"), full_page=True)


def test_login_on_a_non_loopback_host(dataset, browser):
    a = start_app(dataset, "--host", "0.0.0.0", "--auth", "ana:s3cret")
    try:
        ctx = browser.new_context()
        log_in_wrong_then_right(ctx.new_page(), a.url, "ana", "guess", "s3cret", "browser_wb_login")
        ctx.close()
    finally:
        a.stop()
    # without a login the same host is refused at start, in one line
    out = subprocess.run([sys.executable, str(REPO / "launch_app.py"), "--data", str(dataset), "--host", "0.0.0.0"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--host 0.0.0.0 is reachable from other machines" in out.stderr
