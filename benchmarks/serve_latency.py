"""Round trip of one request to `vipa serve`: our PolicyClient against openpi's own WebsocketClientPolicy (openpi-client 0.1.2).

The server is ``vipa.infer.server.PolicyServer`` (the protocol `vipa serve` speaks) with a trivial
policy returning an (8, 7) chunk, in its own process, so what is timed is the transport, the
openpi msgpack-numpy encoding and the server's input checks. Each client sends the same kind of
observation, openpi's LIBERO keys (two 224x224x3 uint8 images, an 8-value state, a prompt), one
warm-up then 20 timed requests (8 with --quick), one after the other. Our client runs in this
process; openpi's runs in its own venv (.venv-openpi or $VIPA_OPENPI_PYTHON, because it pins
numpy<2) through scripts/check_openpi.py. Our client is timed before and after openpi's (both
rounds pooled). ``value`` / ``baseline`` are the medians in ms; p90 and max are reported beside
them. Goal: ours within 25 % of openpi's own client (ratio = openpi / ours >= 0.8).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

_SERVER = """
import sys
import numpy as np
from vipa.infer.server import PolicyServer

class Fixed:
    metadata = {"name": "latency", "chunk": 8, "action_dim": 7, "state_dim": 8}
    def infer(self, obs):
        return np.zeros((8, 7), np.float32)
    def reset(self):
        pass

srv = PolicyServer(Fixed(), port=0).start()
print(srv.port, flush=True)
sys.stdin.read()
"""


def _openpi_python(root: Path) -> Path:
    env = os.environ.get("VIPA_OPENPI_PYTHON")
    for cand in ([Path(env)] if env else []) + [root / ".venv-openpi" / "bin" / "python"]:
        if cand.is_file():
            return cand
    raise RuntimeError("openpi-client venv not built: run scripts/setup_openpi.sh (or set VIPA_OPENPI_PYTHON)")


def _ours(port: int, n: int) -> list[float]:
    from vipa.infer.server import PolicyClient

    rng = np.random.default_rng(0)
    lat = []
    with PolicyClient(port=port) as client:
        for i in range(n + 1):
            obs = {"observation/image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
                   "observation/wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
                   "observation/state": rng.normal(size=8).astype(np.float32),
                   "prompt": "put the bowl on the plate"}
            t0 = time.perf_counter()
            actions = client.infer(obs)
            if i:  # the first is the warm-up
                lat.append((time.perf_counter() - t0) * 1e3)
            if actions.shape != (8, 7) or not np.isfinite(actions).all():
                raise RuntimeError(f"bad actions {actions.shape}")
    return lat


def _stats(lat: list[float]) -> dict[str, float]:
    a = np.asarray(lat)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "max": float(a.max())}


def run(quick: bool) -> dict[str, Any]:
    from vipa.resources import REPO_ROOT

    n = 8 if quick else 20
    py = _openpi_python(REPO_ROOT)
    server = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    try:
        port = int(server.stdout.readline())
        ours = _ours(port, n)
        # check_openpi.py: its own warm-up is its first timed request, so ask for one more and drop it
        proc = subprocess.run([str(py), str(REPO_ROOT / "scripts" / "check_openpi.py"), f"127.0.0.1:{port}",
                               "--requests", str(n + 1), "--size", "224"],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"scripts/check_openpi.py failed: {proc.stderr[-1000:]}")
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        theirs = report["latency_per_request_ms"][1:]
        ours += _ours(port, n)
    finally:
        server.stdin.close()
        server.wait(30)
    o, t = _stats(ours), _stats(theirs)
    return {
        "metric": f"round trip of one request, {n} requests per client (LIBERO keys, two 224x224 images)",
        "unit": "ms",
        "value": o["median"],
        "baseline": t["median"],
        "baseline_name": "openpi-client 0.1.2 WebsocketClientPolicy.infer (its own venv and process)",
        "goal": 0.8,
        "ours_ms": o,
        "openpi_ms": t,
        "actions_shape": report["actions_shape"],
        "requests": {"ours": len(ours), "openpi": len(theirs)},
    }
