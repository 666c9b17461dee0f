"""Workbench start until its first page is usable, against a bare Gradio + gradio_rerun app with one empty viewer.

Both are started as fresh processes on the same machine in the same run, interleaved, and timed
from the process start until the page answers (``GET /`` and ``GET /config``, what the
browser needs to draw the page). Ours: ``launch_app.py --data DS`` on a small synthetic
dataset (2 episodes x 24 frames), everything it imports and opens before serving included.
Baseline: a script that imports gradio and gradio_rerun and serves a Blocks with one empty
``Rerun()``. Beside it: the time from the page being up to the first episode's views
(recording, figures, frame) through the page's own ``/open_episode`` event ("first viewer").
Goal (issue #11): ours within 1.5x of the bare app (ratio = baseline / value >= 1/1.5).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BARE_APP = """
import sys
import gradio as gr
from gradio_rerun import Rerun
with gr.Blocks() as demo:
    Rerun(height=400)
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), ssr_mode=False)
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _time_to_page(cmd: list[str], port: int, cwd: Path, timeout: float = 300.0) -> tuple[float, subprocess.Popen]:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[1]} exited with {proc.returncode}")
        try:
            for route in ("/", "/config"):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=2) as r:
                    r.read()
            return time.perf_counter() - t0, proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"{cmd[1]}: no page in {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(quick: bool) -> dict[str, Any]:
    from gradio_client import Client

    from app.sample import build_synthetic
    from vipa.resources import REPO_ROOT

    repeats = 1 if quick else 3
    ours, bare, first_viewer = [], [], []
    with tempfile.TemporaryDirectory(prefix="vipa-bench-start-") as tmp:
        ds = Path(tmp) / "ds"
        build_synthetic(ds, seeds=(0, 1), num_frames=24)
        script = Path(tmp) / "bare_app.py"
        script.write_text(BARE_APP)
        for _ in range(repeats):
            port = _port()
            dt, proc = _time_to_page([sys.executable, str(script), str(port)], port, REPO_ROOT)
            bare.append(dt)
            _stop(proc)
            port = _port()
            dt, proc = _time_to_page([sys.executable, str(REPO_ROOT / "launch_app.py"), "--data", str(ds),
                                      "--port", str(port)], port, REPO_ROOT)
            ours.append(dt)
            try:
                c = Client(f"http://127.0.0.1:{port}/", verbose=False)
                t0 = time.perf_counter()
                c.predict("synthetic_00", "right", "wrist", api_name="/open_episode")
                first_viewer.append(time.perf_counter() - t0)
            finally:
                _stop(proc)
    value, baseline = min(ours), min(bare)
    return {
        "metric": "process start until the first page is served (GET / and /config)",
        "unit": "s",
        "value": value,
        "baseline": baseline,
        "baseline_name": "bare Gradio Blocks with one empty gradio_rerun viewer",
        "goal": ">= 0.667",
        "first_viewer_s": min(first_viewer),
        "runs_ours_s": ours,
        "runs_bare_s": bare,
    }
