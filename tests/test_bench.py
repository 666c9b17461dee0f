"""The `vipa bench` harness: discovery, result completion, the JSON line (fields, not timings)."""

import json
import math
import textwrap

import pytest

from vipa import bench
from vipa.cli import main

FIELDS = {"name", "metric", "unit", "value", "baseline", "baseline_name", "ratio", "goal", "passed"}


def check_line(line: str, name: str) -> dict:
    rec = json.loads(line)
    assert FIELDS <= set(rec), FIELDS - set(rec)
    assert rec["name"] == name
    assert isinstance(rec["metric"], str) and rec["metric"]
    assert isinstance(rec["unit"], str) and rec["unit"]
    assert isinstance(rec["baseline_name"], str) and rec["baseline_name"]
    for k in ("value", "baseline", "ratio"):
        assert isinstance(rec[k], (int, float)) and math.isfinite(rec[k]) and rec[k] > 0, k
    assert isinstance(rec["passed"], bool)
    return rec


def test_unproject_quick_prints_one_json_line(capsys):
    assert main(["bench", "unproject", "--quick"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    rec = check_line(out[0], "unproject")
    assert rec["unit"] == "ms" and rec["quick"] is True and rec["goal"] == 1.0
    # consistency of the harness, not speed: ratio is baseline / ours for a time
    assert rec["ratio"] == pytest.approx(rec["baseline"] / rec["value"], rel=1e-3)
    assert rec["passed"] == (rec["ratio"] >= rec["goal"])
    # both sides produced the same cloud
    assert rec["points"] > 200_000 and rec["max_abs_diff_m"] < 1e-4


def test_list_shows_docstrings(capsys):
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("unproject"))
    assert "Open3D" in line


@pytest.fixture
def bench_dir(tmp_path, monkeypatch):
    (tmp_path / "good.py").write_text(textwrap.dedent('''
        """Accuracy of something, higher is better."""
        def run(quick):
            return {"metric": "accuracy", "unit": "%", "value": 90.0, "baseline": 60.0,
                    "baseline_name": "chance", "goal": ">= 1.2 of chance", "lower_is_better": False}
    '''))
    (tmp_path / "slow.py").write_text(textwrap.dedent('''
        """Time of something."""
        def run(quick):
            return {"metric": "time", "unit": "s", "value": 4.0, "baseline": 2.0,
                    "baseline_name": "reference", "goal": 1.0, "quick_seen": quick}
    '''))
    (tmp_path / "norun.py").write_text('"""Forgot run."""\nX = 1\n')
    (tmp_path / "partial.py").write_text('"""Partial."""\ndef run(quick):\n    return {"metric": "m"}\n')
    (tmp_path / "_helper.py").write_text("raise RuntimeError('never imported')\n")
    monkeypatch.setattr(bench, "BENCH_DIR", tmp_path)
    return tmp_path


def test_result_completion(bench_dir):
    good = bench.run_benchmark("good", quick=True)
    assert good["ratio"] == pytest.approx(1.5) and good["passed"] is True
    slow = bench.run_benchmark("slow")
    assert slow["ratio"] == pytest.approx(0.5) and slow["passed"] is False and slow["quick_seen"] is False
    assert set(bench.list_benchmarks()) == {"good", "slow", "norun", "partial"}
    with pytest.raises(bench.BenchmarkError, match="no run"):
        bench.run_benchmark("norun")
    with pytest.raises(bench.BenchmarkError, match="lacks"):
        bench.run_benchmark("partial")
    with pytest.raises(bench.BenchmarkError, match="known: good"):
        bench.run_benchmark("missing")


def test_all_and_check_exit_codes(bench_dir, capsys):
    assert main(["bench", "all", "--quick"]) == 2  # two malformed benchmarks, the rest still ran
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [r["name"] for r in lines] == ["good", "norun", "partial", "slow"]
    assert "error" in lines[1] and "error" in lines[2] and lines[3]["passed"] is False
    assert main(["bench", "slow", "--check"]) == 1
    assert main(["bench", "slow"]) == 0
    assert main(["bench", "good", "--check"]) == 0


def test_timing_helpers():
    calls = {"a": 0, "b": 0}

    def a():
        calls["a"] += 1

    def b():
        calls["b"] += 1

    ta, tb = bench.time_pair(a, b, repeats=4, warmup=2)
    assert calls == {"a": 6, "b": 6} and ta.runs == tb.runs == 4
    assert 0 <= ta.best <= ta.median
    t = bench.time_it(a, repeats=3, warmup=0)
    assert t.runs == 3 and calls["a"] == 9
    with pytest.raises(ValueError, match="repeats"):
        bench.time_it(a, repeats=0)


# ---------------------------------------------------------------------- annotation benchmarks (issue 9)


def test_annotation_benchmarks_are_registered(capsys):
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    names = {ln.split()[0] for ln in out.splitlines() if ln.strip()}
    assert {"annotate", "annotate_real"} <= names
    assert "_detect_overlap" not in names  # a helper module, not a benchmark


def test_annotate_real_measures_the_same_frames_side_by_side():
    from vipa.resources import REPO_ROOT

    mod = bench.load_benchmark("annotate_real")
    assert len(mod.clips(False)) == 7 and all(p.is_file() for _, p in mod.clips(False))
    clip = REPO_ROOT / "samples" / "real_clips" / "egoloc" / "jar_shelf.mp4"
    res = mod.measure([("egoloc/jar_shelf", clip)], 8)
    # every loop ran the same 8 frames; figures are finite and positive; ratios are fps over the baseline's
    assert res["frames"] == 8 and res["per_clip"]["egoloc/jar_shelf"]["frames"] == 8
    clocks = res["clocks"]
    for k in ("mediapipe_on_decoded_frames", "ours_search_off", "ours_search_on"):
        for c in ("wall_fps", "cpu_fps", "idle_cores_fps"):
            assert math.isfinite(clocks[k][c]) and clocks[k][c] > 0
            assert res["ratios_vs_predecoded"][k][c] == pytest.approx(
                clocks[k][c] / clocks["mediapipe_on_decoded_frames"][c])
    assert res["value"] == clocks["ours_search_on"]["idle_cores_fps"]
    s = res["search"]
    assert s["extra_hands"] == s["hands_found_on"] - s["hands_found_off"]
    assert s["hands_found_on"] == clocks["ours_search_on"]["hands"] and "track" in s["steps_ms_per_frame"]
    assert res["passed"] == (s["extra_hands"] > 0)
