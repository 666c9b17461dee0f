"""The page's own timings (first viewer) go into the server's timing log; malformed or unknown
reports are ignored, and nothing is written without $VIPA_TIMING_LOG."""

from __future__ import annotations

import json

from app.ui import log_client_timing, timed


def test_page_timings_are_logged_and_junk_is_ignored(tmp_path, monkeypatch):
    log = tmp_path / "t.jsonl"
    monkeypatch.setenv("VIPA_TIMING_LOG", str(log))
    log_client_timing(json.dumps({"event": "page_first_viewer_after_usable", "s": 4.25}))
    log_client_timing(json.dumps({"event": "page_first_viewer_after_inspect_click", "s": 2.5}))
    for junk in ("", "nonsense", json.dumps({"event": "rm -rf", "s": 1}), json.dumps({"event": "x"}),
                 json.dumps({"event": "page_first_viewer_after_usable", "s": -1}), json.dumps([1, 2])):
        log_client_timing(junk)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["event"], r["s"], r["source"]) for r in rows] == [
        ("page_first_viewer_after_usable", 4.25, "page"), ("page_first_viewer_after_inspect_click", 2.5, "page")]


def test_server_events_log_wall_and_cpu_seconds(tmp_path, monkeypatch):
    log = tmp_path / "t.jsonl"
    monkeypatch.setenv("VIPA_TIMING_LOG", str(log))
    f = timed("busy", lambda n: sum(i * i for i in range(n)))
    assert f(200_000) == sum(i * i for i in range(200_000))
    (row,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert row["event"] == "busy" and row["s"] > 0 and 0 < row["cpu_s"] <= row["s"] + 0.01


def test_nothing_is_written_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("VIPA_TIMING_LOG", raising=False)
    monkeypatch.chdir(tmp_path)
    log_client_timing(json.dumps({"event": "page_first_viewer_after_usable", "s": 1.0}))
    assert timed("x", len) is len and list(tmp_path.iterdir()) == []
