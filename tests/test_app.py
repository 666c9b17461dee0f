"""The workbench driven through gradio_client against a running app (a subprocess on a free
port, on a small generated dataset): load, select, correct, undo, redo, restart and find the
correction, export and re-read, two sessions editing at once, paths outside the root refused,
killing the app mid-edit leaves the edit log consistent."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppProcess:
    """launch_app.py in a subprocess; ``client()`` gives a fresh gradio_client session."""

    def __init__(self, data: Path, author: str = "tester", extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.data, self.author, self.extra_args = data, author, tuple(extra_args)
        self.env = dict(env or {})
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240.0) -> "AppProcess":
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **self.env}
        self.log = open(self.data.parent / f"app-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "launch_app.py"), "--data", str(self.data), "--port", str(self.port),
             "--author", self.author, *self.extra_args], cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode}; see {self.log.name}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/config", timeout=2)
                return self
            except urllib.error.HTTPError:  # up, and asking for a login
                return self
            except OSError:
                time.sleep(0.5)
        self.proc.kill()
        self.proc.wait()
        raise TimeoutError(f"app did not come up in {timeout} s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def client(self) -> Client:
        return Client(self.url, verbose=False)

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from app.sample import build_synthetic

    root = tmp_path_factory.mktemp("app") / "ds"
    build_synthetic(root, seeds=(0, 1), num_frames=12)
    return root


@pytest.fixture(scope="module")
def app(dataset):
    a = AppProcess(dataset).start()
    yield a
    a.stop()


def joint(c: Client, eid: str, frame: int, side="right", name="index_tip") -> dict:
    return c.predict(eid, frame, side, name, api_name="/joint")


def test_load_select_correct_undo_redo_restart_export(app, dataset, tmp_path):
    c = app.client()
    rows = c.predict(api_name="/episodes")
    assert [r["episode"] for r in rows] == ["synthetic_00", "synthetic_01"]
    assert all(r["frames"] == 12 for r in rows)
    # every quality column the Browse tab lists has a value (calib_residual from the depth, as the Align tab)
    assert all(r[k] is not None for r in rows for k in ("detection_rate", "reproj_median_px", "calib_residual"))
    # select an episode the way the page does (all views refresh)
    out = c.predict("synthetic_00", "right", "index_tip", api_name="/open_episode")
    assert out[0]["maximum"] == 11 and Path(out[1][0] if isinstance(out[1], list) else out[1]).exists()
    assert out[2].startswith("synthetic_00-")  # a fresh recording id per send

    before = joint(c, "synthetic_00", 4)
    u, v = before["uv"][0] + 6.0, before["uv"][1] - 3.0
    c.predict("synthetic_00", 4, "right", "index_tip", u, v, api_name="/move_joint")
    moved = joint(c, "synthetic_00", 4)
    assert moved["uv"] == pytest.approx([u, v], abs=1e-3)
    assert moved["xyz"][2] == pytest.approx(before["xyz"][2], abs=1e-6)  # same depth, new ray
    assert moved["xyz"][0] != pytest.approx(before["xyz"][0], abs=1e-4)

    assert c.predict("synthetic_00", api_name="/undo").startswith("undone: moved right index_tip in frame 4")
    assert joint(c, "synthetic_00", 4)["uv"] == pytest.approx(before["uv"], abs=1e-4)
    assert c.predict("synthetic_00", api_name="/redo").startswith("redone: moved right index_tip in frame 4")
    assert joint(c, "synthetic_00", 4)["uv"] == pytest.approx([u, v], abs=1e-3)
    hist = c.predict("synthetic_00", api_name="/history")
    assert [h["target"] for h in hist] == ["joint_2d", "undo", "redo"] and hist[0]["author"] == "tester"
    # re-derived QA / motion tokens exist after the edit (in the background, once the edits pause)
    qa = dataset / "episodes" / "synthetic_00" / "derived" / "qa.jsonl"
    deadline = time.time() + 120
    while not qa.is_file() and time.time() < deadline:
        time.sleep(0.2)
    assert qa.is_file()

    app.stop()
    app.start()
    c2 = app.client()
    assert joint(c2, "synthetic_00", 4)["uv"] == pytest.approx([u, v], abs=1e-3)

    out_dir = c2.predict("exp1", api_name="/export")
    from vipa.data.dataset import Hand3DDataset

    exported = Hand3DDataset.open(out_dir)
    ep = exported.load_episode("synthetic_00", corrected=False)  # merged values are the base there
    assert ep.hands["right"].joints_2d[4, 8].tolist() == pytest.approx([u, v], abs=1e-3)
    assert exported.episode_ids() == ["synthetic_00", "synthetic_01"]


def test_other_corrections_through_the_api(app):
    c = app.client()
    eid = "synthetic_01"
    j0 = joint(c, eid, 2, name="wrist")
    c.predict(eid, 2, "right", "wrist", 0.02, api_name="/nudge_depth")
    assert joint(c, eid, 2, name="wrist")["xyz"][2] == pytest.approx(j0["xyz"][2] + 0.02, abs=1e-5)
    c.predict(eid, 2, "right", "wrist", False, api_name="/set_visibility")
    assert joint(c, eid, 2, name="wrist")["valid"] is False
    c.predict(eid, 5, True, api_name="/mark_bad")
    c.predict(eid, 1.25, api_name="/set_scale")
    c.predict(eid, "approved", api_name="/set_review")
    c.predict(eid, "push the cube left", api_name="/set_instruction")
    c.predict(eid, 7, "needs-fix", api_name="/set_frame_review")
    assert joint(c, eid, 7)["frame_review"] == "needs-fix"
    info = c.predict(eid, api_name="/episode_info")
    assert info["bad_frames"] == [5] and info["scale"] == pytest.approx(1.25)
    assert info["review_status"] == "approved" and info["instruction"] == "push the cube left"
    assert info["frame_review"] == {"7": "needs-fix"}
    obj = info["objects"][0]
    c.predict(eid, 3, obj, 10, 12, 40, 44, api_name="/set_box")
    c.predict(eid, "right", "thumb_tip", 0, 6, api_name="/interpolate")
    j = [joint(c, eid, f, name="thumb_tip")["uv"] for f in (0, 3, 6)]
    assert j[1] == pytest.approx(list((np.array(j[0]) + np.array(j[2])) / 2), abs=1e-3)
    rows = c.predict("", "approved", api_name="/episodes")
    assert [r["episode"] for r in rows] == [eid]
    worst = c.predict(eid, 3, api_name="/worst_frames")
    assert len(worst) == 3 and all("frame" in w for w in worst)
    rec = Path(c.predict(eid, api_name="/recording"))  # a file gradio_client downloaded
    assert rec.stat().st_size > 10_000 and rec.read_bytes()[:4] == b"RRF2"


def test_two_sessions_editing_the_same_episode_lose_no_edit(app):
    a, b = app.client(), app.client()
    eid = "synthetic_00"
    n_before = len(a.predict(eid, api_name="/history"))
    errors = []

    def edits(client: Client, frames: range, side_joint: str):
        try:
            for f in frames:
                uv = joint(client, eid, f, name=side_joint)["uv"]
                client.predict(eid, f, "right", side_joint, uv[0] + 1.0, uv[1] + 1.0, api_name="/move_joint")
        except Exception as exc:  # reported below
            errors.append(exc)

    ta = threading.Thread(target=edits, args=(a, range(0, 6), "middle_tip"))
    tb = threading.Thread(target=edits, args=(b, range(6, 12), "ring_tip"))
    ta.start(), tb.start(), ta.join(), tb.join()
    assert not errors, errors
    hist = a.predict(eid, api_name="/history")
    new = [h for h in hist[n_before:] if h["target"] == "joint_2d"]
    assert len(new) == 12
    assert {(h["frame"], h["joint"]) for h in new} == {(f, 12) for f in range(6)} | {(f, 16) for f in range(6, 12)}


def test_paths_outside_the_root_are_refused(app):
    from gradio_client.exceptions import AppError

    c = app.client()
    for bad in ("../ds", "../../etc", "/etc/passwd", "synthetic_00/../../x"):
        with pytest.raises(AppError):
            c.predict(bad, api_name="/episode_info")
    with pytest.raises(AppError, match="outside|escape|PathEscape"):
        c.predict("../../escaped", api_name="/export")
    with pytest.raises(AppError):
        c.predict("synthetic_00", 999, "right", "wrist", api_name="/joint")


def test_predict_tab_with_and_without_a_checkpoint(app, tmp_path):
    from app.predict import DEFAULT_CHECKPOINTS, load_predictor
    from app.ui import _predict_status

    assert load_predictor(tmp_path / "missing")[0] is None
    assert "No checkpoint is loaded" in _predict_status(None)
    if not any(p.exists() for p in DEFAULT_CHECKPOINTS):
        from gradio_client.exceptions import AppError

        with pytest.raises(AppError, match="no checkpoint is loaded"):
            app.client().predict("synthetic_00", 0, "", api_name="/predict")
        return
    res = app.client().predict("synthetic_00", 2, "", api_name="/predict")
    assert "predicted waypoints" in res["message"] and res["recording_id"].startswith("synthetic_00-")
    assert res["error_m"] is None or 0 <= res["error_m"] < 1.0


def test_edits_send_small_viewer_updates_and_leave_bounded_temp_files(dataset, tmp_path):
    """100 edits through the page's own event: each returns an update of the edited frame (not a
    whole recording) and Gradio's temp folder stays bounded."""
    from app.ui import KEEP_OUTPUT_FILES

    gtmp = tmp_path / "gradio_tmp"
    gtmp.mkdir()
    timing = tmp_path / "timing.jsonl"
    a = AppProcess(dataset, author="temp", env={"GRADIO_TEMP_DIR": str(gtmp), "VIPA_TIMING_LOG": str(timing)}).start()
    try:
        c = a.client()
        out = c.predict("synthetic_01", "right", "wrist", api_name="/open_episode")
        full_rrd, rid = out[1], out[2]
        full = Path(full_rrd[0] if isinstance(full_rrd, list) else full_rrd).stat().st_size
        sizes = []
        for i in range(100):
            res = c.predict("synthetic_01", 3, "synthetic_01@3", "right", "wrist", rid,
                            api_name="/ui_toggle_visibility")
            assert res[3] == rid  # the same recording, updated
            upd = res[2][0] if isinstance(res[2], list) else res[2]
            sizes.append(Path(upd).stat().st_size if Path(upd).exists() else None)
        # the view moved on meanwhile (slider 4, picture 3): refused, nothing changes
        n = len(c.predict("synthetic_01", api_name="/history"))
        res = c.predict("synthetic_01", 4, "synthetic_01@3", "right", "wrist", rid, api_name="/ui_toggle_visibility")
        assert "not applied" in res[7] and len(c.predict("synthetic_01", api_name="/history")) == n
    finally:
        a.stop()
    assert max(s for s in sizes[-5:] if s is not None) < full / 5
    files = [p for p in gtmp.rglob("*") if p.is_file()]
    assert len(files) <= KEEP_OUTPUT_FILES + 8, len(files)
    assert n >= 100
    rows = [json.loads(line) for line in timing.read_text().splitlines()]
    assert sum(r["event"] == "ui_toggle_visibility" for r in rows) == 101


def test_uploads_are_type_and_size_checked(tmp_path):
    from PIL import Image

    from app.workbench import load_upload_image

    good = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    assert load_upload_image(good, 1).shape == (8, 8, 3)
    fake = tmp_path / "b.png"
    fake.write_bytes(b"GIF89a" + b"\0" * 64)
    with pytest.raises(ValueError, match=r"^The file b.png is not a readable PNG or JPEG image; please upload another.$"):
        load_upload_image(fake, 1)
    garbled = tmp_path / "g.png"
    garbled.write_bytes(good.read_bytes()[:40])  # a truncated PNG, as in the issue
    with pytest.raises(ValueError, match="not a readable PNG or JPEG"):
        load_upload_image(garbled, 1)
    with pytest.raises(ValueError, match="is not a PNG or JPEG image"):
        load_upload_image(tmp_path / "c.pkl", 1)
    big = tmp_path / "d.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (800, 800, 3), np.uint8)).save(big)
    with pytest.raises(ValueError, match="limit"):
        load_upload_image(big, 1)


def _other_episode_rows(log: Path) -> int:
    con = sqlite3.connect(log)
    try:
        return con.execute("SELECT COUNT(*) FROM edits WHERE episode_id != 'synthetic_01'").fetchone()[0]
    finally:
        con.close()


@pytest.mark.slow
def test_killing_the_app_mid_edit_leaves_the_log_consistent(dataset, tmp_path):
    import shutil

    root = tmp_path / "kill_ds"
    shutil.copytree(dataset, root)
    log = root / "corrections.sqlite"
    first_new = 1
    if log.exists():
        con = sqlite3.connect(log)
        first_new = (con.execute("SELECT MAX(id) FROM edits").fetchone()[0] or 0) + 1
        con.close()
    a = AppProcess(root).start()
    stop = threading.Event()

    def hammer():
        c = a.client()
        while not stop.is_set():
            try:  # a multi-row batch: 10 in-betweens per call
                c.predict("synthetic_01", "right", "", 0, 11, api_name="/interpolate")
            except Exception:
                return

    t = threading.Thread(target=hammer, daemon=True)
    t.start()
    time.sleep(4.0)
    a.stop(kill=True)
    stop.set()
    t.join(timeout=30)
    con = sqlite3.connect(root / "corrections.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    sizes = con.execute("SELECT batch_id, COUNT(*) FROM edits WHERE target = 'joint_2d' AND id >= ? "
                        "GROUP BY batch_id", (first_new,)).fetchall()
    total = con.execute("SELECT COUNT(*) FROM edits").fetchone()[0]
    con.close()
    assert sizes, "no edit reached the log before the kill"
    assert len({n for _, n in sizes}) == 1  # every batch whole: all in-betweens of all joints, or none
    a2 = AppProcess(root).start()
    try:
        hist = a2.client().predict("synthetic_01", api_name="/history")
        assert len(hist) == total - _other_episode_rows(log)
    finally:
        a2.stop()
