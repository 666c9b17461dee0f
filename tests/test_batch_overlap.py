"""One-worker batches write episode N on a writer thread while N+1 is annotated (annotators.batch).

Checked here: the overlap happens and at most one write is pending; episodes go in complete and
in input order; a write error fails that episode only (its message in the report); the report's
counts match the dataset; Ctrl-C waits for the episode being written (a second one leaves it
unfinished); kill -9 during the overlapped write leaves it unfinished and the resume redoes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import annotators.pipeline as pipeline
from annotators.batch import annotate_to_dataset
from annotators.pipeline import AnnotateConfig
from vipa.data.dataset import Hand3DDataset
from vipa.resources import SAMPLE_VIDEO

FAST = {"decode": {"max_frames": 4, "max_width": 320}}
ROOT = Path(__file__).resolve().parents[1]
REAL_WRITE = pipeline.write_annotation


@pytest.fixture()
def clips(tmp_path) -> list[Path]:
    out = []
    for name in ("a", "b", "c"):
        p = tmp_path / f"{name}.mp4"
        p.symlink_to(SAMPLE_VIDEO)
        out.append(p)
    return out


def _dataset_counts(root: Path, ids: list[str]) -> dict[str, int]:
    """What the dataset holds for ``ids``, in the report's words."""
    ds = Hand3DDataset.open(root)
    counts: dict[str, int] = {}
    for eid in ids:
        st = ds.status(eid)
        key = None if st is None else ("ok" if ds.is_finished(eid) else "failed" if st == "failed" else "incomplete")
        if key:
            counts[key] = counts.get(key, 0) + 1
    return counts


class Events:
    """A thread-safe log of (what, episode, thread name, time)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    def add(self, what: str, eid: str) -> None:
        with self.lock:
            self.items.append((what, eid, threading.current_thread().name))

    def index(self, what: str, eid: str) -> int:
        return next(i for i, (w, e, _) in enumerate(self.items) if w == what and e == eid)


def _traced_write(monkeypatch, events: Events, hold: dict[str, threading.Event] | None = None, fail: str = ""):
    """Wrap pipeline.write_annotation: log start/end (and the thread), optionally hold a write until
    an event is set, or fail one episode's write after its main files are in."""
    real = REAL_WRITE

    def traced(ds, ann, checkpoint=None):
        eid = ann.episode.episode_id
        events.add("write_start", eid)
        try:
            if eid == fail:
                ds.write_episode(ann.episode, complete=False)
                raise OSError(28, "No space left on device", "derived/qa.jsonl")
            if hold and eid in hold:
                assert hold[eid].wait(60), f"the write of {eid} was never released"
            real(ds, ann, checkpoint)
        finally:
            events.add("write_end", eid)

    monkeypatch.setattr(pipeline, "write_annotation", traced)


def test_writes_overlap_annotation_in_input_order(tmp_path, clips, monkeypatch):
    events = Events()
    next_started = threading.Event()
    # The write of "a" is held until "b" is being annotated: a sequential batch would never get there.
    _traced_write(monkeypatch, events, hold={"a": next_started})

    def on_frame(eid, done, total):
        events.add("frame", eid)
        if eid == "b":
            next_started.set()

    seen = []
    out = tmp_path / "ds"
    report = annotate_to_dataset(clips, out, AnnotateConfig(**FAST), on_frame=on_frame,
                                 progress=lambda o, d, t: seen.append((o.episode_id, o.status, d, t)))
    assert [(o.episode_id, o.status) for o in report.outcomes] == [("a", "ok"), ("b", "ok"), ("c", "ok")]
    assert sorted(seen) == [("a", "ok", 1, 3), ("b", "ok", 2, 3), ("c", "ok", 3, 3)]
    # writes ran on the writer thread, concurrently with the next episode's annotation
    writes = [e for e in events.items if e[0].startswith("write")]
    assert {t for _, _, t in writes} and all(t.startswith("vipa-episode-writer") for _, _, t in writes)
    assert all(t == threading.main_thread().name for w, _, t in events.items if w == "frame")
    assert events.index("frame", "b") < events.index("write_end", "a")
    # at most one write pending: "a" was written before "c" was annotated, "b" before "c" was written
    assert events.index("write_end", "a") < events.index("frame", "c")
    starts = [e for w, e, _ in events.items if w == "write_start"]
    assert starts == ["a", "b", "c"]
    in_flight = 0
    for w, _, _ in events.items:
        in_flight += {"write_start": 1, "write_end": -1}.get(w, 0)
        assert in_flight <= 1
    # complete and in order in the dataset; the report's counts are the dataset's
    ds = Hand3DDataset.open(out)
    assert ds.episode_ids() == ["a", "b", "c"]
    assert all(ds.is_finished(e) and ds.num_frames(e) == 4 for e in "abc")
    assert all(len(ds.read_derived(e, "qa")) > 0 for e in "abc")
    assert report.counts() == _dataset_counts(out, list("abc")) == {"ok": 3}
    assert all(o.num_frames == 4 and o.seconds > 0 for o in report.outcomes)
    # the batch waited for "a"'s held write only until it ended, and for the last write
    assert 0 < report.write_wait_s <= report.write_s < report.seconds
    assert report.to_dict()["write_s"] == report.write_s


def test_overlap_off_writes_before_the_next_episode(tmp_path, clips, monkeypatch):
    events = Events()
    _traced_write(monkeypatch, events)
    report = annotate_to_dataset(clips[:2], tmp_path / "ds", AnnotateConfig(**FAST), overlap_writes=False,
                                 on_frame=lambda eid, d, t: events.add("frame", eid))
    assert [o.status for o in report.outcomes] == ["ok", "ok"]
    assert events.index("write_end", "a") < events.index("frame", "b")
    assert all(t == threading.main_thread().name for _, _, t in events.items)


def test_write_error_fails_that_episode_only(tmp_path, clips, monkeypatch):
    events = Events()
    _traced_write(monkeypatch, events, fail="b")
    out = tmp_path / "ds"
    report = annotate_to_dataset(clips, out, AnnotateConfig(**FAST))
    st = {o.episode_id: o for o in report.outcomes}
    assert [o.episode_id for o in report.outcomes] == ["a", "b", "c"]
    assert st["a"].status == st["c"].status == "ok"
    assert st["b"].status == "failed"
    assert "writing the episode failed" in st["b"].error and "No space left on device" in st["b"].error
    ds = Hand3DDataset.open(out)
    assert ds.status("b") == "failed" and "No space left on device" in ds.error("b")
    assert not ds.is_finished("b") and ds.is_finished("a") and ds.is_finished("c")
    assert ds.episode_ids() == ["a", "c"]
    assert report.counts() == _dataset_counts(out, list("abc")) == {"ok": 2, "failed": 1}
    assert "2 annotated" in report.summary() and "1 failed" in report.summary()
    # the resume redoes the failed one only
    monkeypatch.setattr(pipeline, "write_annotation", REAL_WRITE)
    again = annotate_to_dataset(clips, out, AnnotateConfig(**FAST))
    assert [(o.episode_id, o.status) for o in again.outcomes] == [("a", "skipped"), ("b", "ok"), ("c", "skipped")]
    assert Hand3DDataset.open(out).is_finished("b")


def test_annotation_failure_during_a_write_keeps_both(tmp_path, clips, monkeypatch):
    events = Events()
    _traced_write(monkeypatch, events)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"")
    out = tmp_path / "ds"
    report = annotate_to_dataset([clips[0], bad, clips[1]], out, AnnotateConfig(**FAST))
    assert [(o.episode_id, o.status) for o in report.outcomes] == [("a", "ok"), ("bad", "failed"), ("b", "ok")]
    ds = Hand3DDataset.open(out)
    assert [r["episode_id"] for r in ds.episodes_table()] == ["a", "bad", "b"]  # input order, as sequential
    assert report.counts() == _dataset_counts(out, ["a", "bad", "b"])


@pytest.fixture()
def sigint_raises():
    """Ctrl-C raises KeyboardInterrupt in this process (also when the tests were started with it ignored)."""
    prev = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, prev)


def test_ctrl_c_waits_for_the_episode_being_written(tmp_path, clips, monkeypatch, sigint_raises, capsys):
    events = Events()
    release = threading.Event()
    _traced_write(monkeypatch, events, hold={"a": release})

    def on_frame(eid, done, total):
        if eid == "b" and done == 2:  # Ctrl-C while "b" is annotated and "a" is still being written
            threading.Timer(0.5, release.set).start()
            raise KeyboardInterrupt

    out = tmp_path / "ds"
    report = annotate_to_dataset(clips, out, AnnotateConfig(**FAST), on_frame=on_frame)
    assert report.interrupted
    assert [(o.episode_id, o.status) for o in report.outcomes] == [("a", "ok")]  # waited for, counted
    assert "finishing the episode being written" in capsys.readouterr().err
    ds = Hand3DDataset.open(out)
    assert ds.is_finished("a") and ds.status("b") is None and ds.status("c") is None
    assert report.counts() == _dataset_counts(out, list("abc")) == {"ok": 1}
    assert not any(t.name.startswith("vipa-episode-writer") for t in threading.enumerate())


def test_second_ctrl_c_leaves_the_write_unfinished_and_counted_so(tmp_path, clips, monkeypatch, sigint_raises):
    main = threading.main_thread().ident
    entered, release = threading.Event(), threading.Event()
    real_derived = Hand3DDataset.write_derived

    def held_derived(self, eid, name, records):  # "a"'s main files are in; hold its first derived product
        if eid == "a" and not entered.is_set():
            entered.set()
            assert release.wait(60)
        return real_derived(self, eid, name, records)

    monkeypatch.setattr(Hand3DDataset, "write_derived", held_derived)

    def second_ctrl_c():
        time.sleep(0.5)  # the main thread now waits for the write
        signal.pthread_kill(main, signal.SIGINT)
        time.sleep(0.3)
        release.set()

    def on_frame(eid, done, total):
        if eid == "b" and done == 2:
            assert entered.wait(60)
            threading.Thread(target=second_ctrl_c, daemon=True).start()
            raise KeyboardInterrupt

    out = tmp_path / "ds"
    report = annotate_to_dataset(clips, out, AnnotateConfig(**FAST), on_frame=on_frame)
    assert report.interrupted
    assert [(o.episode_id, o.status) for o in report.outcomes] == [("a", "incomplete")]
    ds = Hand3DDataset.open(out)
    assert ds.status("a") == "ok" and not ds.is_finished("a")  # files without their marker
    assert not (out / "episodes" / "a" / "complete.json").exists()
    assert report.counts() == _dataset_counts(out, list("abc")) == {"incomplete": 1}
    monkeypatch.setattr(Hand3DDataset, "write_derived", real_derived)
    again = annotate_to_dataset(clips[:1], out, AnnotateConfig(**FAST))  # the resume redoes it
    assert [(o.episode_id, o.status) for o in again.outcomes] == [("a", "ok")] and ds.is_finished("a")


def test_kill_9_during_an_overlapped_write_is_redone(tmp_path, clips):
    """kill -9 while "a" is written (its marker not yet in) and "b" is annotated: neither counts as done."""
    out = tmp_path / "ds"
    script = (
        "import os, signal, threading\n"
        "from vipa.data.reader import Hand3DDataset\n"
        "from annotators.batch import annotate_to_dataset\n"
        "from annotators.pipeline import AnnotateConfig\n"
        "b_started = threading.Event()\n"
        "def mark(self, eid):\n"
        "    assert b_started.wait(120)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "Hand3DDataset.mark_complete = mark\n"
        "def on_frame(eid, done, total):\n"
        "    if eid == 'b':\n"
        "        b_started.set()\n"
        f"annotate_to_dataset({[str(c) for c in clips]!r}, {str(out)!r}, "
        "AnnotateConfig(decode={'max_frames': 4, 'max_width': 320}), on_frame=on_frame)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ds = Hand3DDataset.open(out)
    assert ds.status("a") == "ok" and not ds.is_finished("a") and ds.status("b") is None
    report = annotate_to_dataset(clips[:2], out, AnnotateConfig(**FAST))
    assert [(o.episode_id, o.status) for o in report.outcomes] == [("a", "ok"), ("b", "ok")]
    assert ds.is_finished("a") and ds.is_finished("b")
    marker = json.loads((out / "episodes" / "a" / "complete.json").read_text())
    assert "derived/qa.jsonl" in marker["files"]


def test_cli_no_overlap_write_flag(tmp_path, clips, monkeypatch):
    import argparse

    from annotators import cli

    events = Events()
    _traced_write(monkeypatch, events)
    parser = argparse.ArgumentParser(prog="vipa")
    cli.register(parser.add_subparsers(dest="command"))
    common = ["--max-frames", "4", "--max-width", "320", "--quiet"]
    for flag, writer_thread in (([], True), (["--no-overlap-write"], False)):
        events.items.clear()
        out = tmp_path / f"ds{len(flag)}"
        args = parser.parse_args(["annotate", *map(str, clips[:2]), "--out", str(out), *common, *flag])
        assert args.func(args) == 0
        threads = {t for w, _, t in events.items if w.startswith("write")}
        assert len(threads) == 1 and next(iter(threads)).startswith("vipa-episode-writer") == writer_thread
        assert Hand3DDataset.open(out).episode_ids() == ["a", "b"]
