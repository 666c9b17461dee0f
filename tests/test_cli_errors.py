"""Bad input to any `vipa` command ends with exactly one line on stderr naming what is wrong, a
non-zero exit status, and no traceback (``--debug`` shows it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "checkpoints" / "tiny_sample"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLOG_minloglevel="3", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "vipa.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _main(args: list[str], capsys) -> subprocess.CompletedProcess:
    """`vipa ARGS` in this process (a subprocess per case costs ~15 s of imports on a loaded machine)."""
    from vipa import cli

    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as exc:  # argparse
        rc = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out, err)


def _one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    err = proc.stderr
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert proc.returncode not in (0, None), err
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("vipa "), lines
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    (d / "garbage.png").write_bytes(b"this is no PNG")
    (d / "empty").mkdir()
    (d / "afile").write_text("x")
    return d


CASES = {
    "export of a missing dataset": (["export", "{d}/nope", "--out", "{d}/o"], ["nope", "no such dataset"]),
    "view of a missing dataset": (["view", "{d}/nope"], ["nope", "no such dataset"]),
    "train on a missing dataset": (["train", "stage1", "--data", "{d}/nope", "--out", "{d}/t"], ["nope"]),
    "post-train on a folder that is no LeRobot dataset": (["train", "post", "--data", "{d}/empty", "--out", "{d}/t2"],
                                                          ["empty", "not a LeRobot v3 dataset"]),
    "predict with a missing checkpoint": (["predict", "{d}/nockpt", "--image", "{d}/garbage.png",
                                           "--instruction", "hi"], ["nockpt"]),
    "eval with a missing checkpoint": (["eval", "{d}/nockpt", "--data", "{d}/nope"], ["nockpt"]),
    "serve a missing checkpoint": (["serve", "{d}/nockpt"], ["nockpt"]),
    "an unknown benchmark": (["bench", "no_such_bench"], ["no_such_bench"]),
    "an unknown simulator task": (["sim", "collect", "--tasks", "nosuch-v3", "--out", "{d}/s", "--episodes", "1"],
                                  ["nosuch-v3"]),
    "export into a file": (["export", "{d}/empty", "--out", "{d}/afile"], []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line(case, bad, capsys):
    args, needles = CASES[case]
    _one_line(_main([a.format(d=bad) for a in args], capsys), *needles)


def test_predict_on_a_garbage_image_is_one_line(bad, capsys):
    if not (TINY / "model.safetensors").is_file():
        pytest.skip("checkpoints/tiny_sample is not in this checkout")
    _one_line(_main(["predict", TINY, "--image", bad / "garbage.png", "--instruction", "hi"], capsys), "garbage.png")


def test_debug_gives_the_traceback(bad):
    """In a real process: the traceback reaches stderr."""
    proc = _run(["--debug", "sim", "collect", "--tasks", "nosuch-v3", "--out", bad / "s", "--episodes", "1"], bad)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
