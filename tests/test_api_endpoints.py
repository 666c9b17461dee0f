"""Every named Gradio endpoint of the workbench carries a description from app/api_docs.py (with
units), a missing one stops the UI from building, and `/recording` gives API clients a
downloadable .rrd file rather than a path on the server."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app import api_docs  # noqa: E402
from app.api_docs import API_DESCRIPTIONS  # noqa: E402
from app.ui import build_ui  # noqa: E402
from app.workbench import Workbench  # noqa: E402

READY = {"ready": True, "message": "", "progress": 1.0}


class _TwoRollouts:
    """The Rollouts tab's data source (as app.rollouts.RolloutFolder), so its two endpoints are built."""

    def summary_markdown(self) -> str:
        return "one rollout"

    def names(self) -> list[str]:
        return ["r0"]

    def video_names(self) -> list[str]:
        return ["v0"]

    def recording(self, name: str) -> None:
        return None

    def video(self, name: str) -> None:
        return None


@pytest.fixture(scope="module")
def workbench(tmp_path_factory) -> Workbench:
    from app.sample import build_synthetic

    root = tmp_path_factory.mktemp("api") / "ds"
    build_synthetic(root, seeds=(0,), num_frames=6)
    return Workbench(root, author="tester")


def _named(demo) -> dict[str, object]:
    return {f.api_name: f for f in demo.fns.values() if f.api_name and f.api_visibility != "private"}


def test_every_named_endpoint_has_its_description(workbench):
    demo = build_ui(lambda: workbench, lambda: READY, rollouts=_TwoRollouts())
    named = _named(demo)
    assert len(named) >= 30
    missing = sorted(set(named) - set(API_DESCRIPTIONS))
    assert missing == [], f"endpoints without a description in app/api_docs.py: {missing}"
    stale = sorted(set(API_DESCRIPTIONS) - set(named))
    assert stale == [], f"descriptions of endpoints that do not exist: {stale}"
    for name, fn in named.items():
        assert fn.api_description == API_DESCRIPTIONS[name], name
    # units are written where numbers go in or out
    for name in ("move_joint", "nudge_depth", "set_box", "joint", "worst_frames", "predict", "set_scale",
                 "set_hand_scale", "ui_depth_plus"):
        assert re.search(r"\((px|m|unitless|0-1)\b|\bpixels\b|\bmetres\b", API_DESCRIPTIONS[name]), name


def test_an_endpoint_without_a_description_stops_the_build(workbench, monkeypatch):
    docs = dict(API_DESCRIPTIONS)
    del docs["nudge_depth"]
    monkeypatch.setattr(api_docs, "API_DESCRIPTIONS", docs)
    with pytest.raises(KeyError, match="/nudge_depth has no description"):
        build_ui(lambda: workbench, lambda: READY)


def test_recording_is_a_downloadable_file(workbench):
    from gradio_client import Client

    demo = build_ui(lambda: workbench, lambda: READY)
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        client = Client(url, verbose=False, download_files=str(Path(workbench.root).parent / "downloads"))
        info = client.view_api(print_info=False, return_format="dict")
        eps = info["named_endpoints"]
        assert eps["/nudge_depth"]["description"] == API_DESCRIPTIONS["nudge_depth"]
        assert eps["/recording"]["returns"][0]["component"] == "File"
        local = Path(client.predict("synthetic_00", api_name="/recording"))
        assert local.is_file() and local.suffix == ".rrd"
        assert str(local).startswith(str(Path(workbench.root).parent / "downloads"))  # downloaded, not a server path
        assert local.read_bytes()[:4] == b"RRF2" and local.stat().st_size > 10_000
        with pytest.raises(Exception, match="not in"):
            client.predict("no_such_episode", api_name="/recording")
    finally:
        demo.close()
