"""`vipa serve` speaks openpi's WebSocket protocol: openpi's own client (openpi-client 0.1.2, in its own
venv because it pins numpy<2) gets finite actions; bad numbers, oversized requests and floods of
clients are refused with errors that name the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from vipa.infer.msgpack_numpy import packb, unpackb
from vipa.infer.server import PolicyClient, PolicyServer, PolicyServerError

ROOT = Path(__file__).resolve().parents[1]
CHUNK, ACTION_DIM, STATE_DIM = 8, 7, 8  # also the shape benchmarks/serve_latency.py serves


def _openpi_python() -> Path | None:
    env = os.environ.get("VIPA_OPENPI_PYTHON")
    for cand in ([Path(env)] if env else []) + [ROOT / ".venv-openpi" / "bin" / "python"]:
        if cand.is_file():
            return cand
    return None


class _StatePolicy:
    """Actions follow the state and the image mean, so a wrong decode shows in the numbers."""

    metadata = {"name": "state-echo", "chunk": CHUNK, "action_dim": ACTION_DIM, "state_dim": STATE_DIM}

    def __init__(self, out: np.ndarray | None = None):
        self.out, self.seen, self.resets = out, [], 0

    def infer(self, observation):
        self.seen.append(observation)
        if self.out is not None:
            return self.out
        base = np.concatenate([observation["state"][:ACTION_DIM - 1], [observation["image"].mean() / 255.0]])
        return np.tile(base.astype(np.float32), (CHUNK, 1))

    def reset(self):
        self.resets += 1


def _obs(rng: np.random.Generator, size: int = 32, openpi: bool = False) -> dict:
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    state = rng.normal(size=STATE_DIM).astype(np.float32)
    if openpi:
        return {"observation/image": img, "observation/wrist_image": img[::-1].copy(),
                "observation/state": state, "prompt": "put the bowl on the plate"}
    K = np.array([[40.0, 0, size / 2], [0, 40.0, size / 2], [0, 0, 1]], np.float32)
    return {"image": img, "depth": rng.uniform(0.3, 2.0, (size, size)).astype(np.float32), "K": K,
            "state": state, "instruction": "reach the button"}


@pytest.fixture
def server():
    policy = _StatePolicy()
    srv = PolicyServer(policy, port=0, max_connections=3, max_request_bytes=2**20).start()
    yield srv
    srv.stop()


def _raw_request(port: int, payload: bytes) -> tuple[str | bytes, int | None]:
    """Send one raw message as openpi's client does; the reply and the close code (None if open)."""
    with connect(f"ws://127.0.0.1:{port}", max_size=None, compression=None) as ws:
        meta = msgpack.unpackb(ws.recv(timeout=10))
        assert meta["name"] == "state-echo"
        ws.send(payload)
        reply = ws.recv(timeout=10)
        try:
            ws.recv(timeout=10)
            code = None
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
        except TimeoutError:
            code = None
        return reply, code


def test_openpi_wire_format_and_keys(server):
    rng = np.random.default_rng(0)
    obs = _obs(rng, openpi=True)
    # openpi's encoding: byte keys, dtype.str, tuple shape (what openpi_client.msgpack_numpy.packb writes)
    def openpi_default(o):
        if isinstance(o, np.ndarray):
            return {b"__ndarray__": True, b"data": o.tobytes(), b"dtype": o.dtype.str, b"shape": o.shape}
        raise TypeError(type(o))

    reply, code = _raw_request(server.port, msgpack.packb(obs, default=openpi_default))
    assert isinstance(reply, bytes) and code is None
    raw = msgpack.unpackb(reply)
    arr = raw["actions"]
    assert set(arr) == {b"__ndarray__", b"data", b"dtype", b"shape"} and arr[b"dtype"] == "<f4"
    actions = unpackb(reply)["actions"]
    assert actions.shape == (CHUNK, ACTION_DIM) and np.isfinite(actions).all()
    np.testing.assert_allclose(actions[0, :6], obs["observation/state"][:6])
    assert actions[0, 6] == pytest.approx(obs["observation/image"].mean() / 255.0, rel=1e-6)
    seen = server.policy.seen[-1]
    assert seen["instruction"] == "put the bowl on the plate" and seen["wrist_image"].shape == (32, 32, 3)
    assert "infer_ms" in unpackb(reply)["server_timing"]
    # numpy scalars travel as openpi's __npgeneric__
    assert unpackb(packb({"x": np.float32(1.5)}))["x"] == np.float32(1.5)


@pytest.mark.parametrize("field,value,message", [
    ("state", lambda o: np.r_[np.nan, o["state"][1:]].astype(np.float32), "observation.state: 1 non-finite"),
    ("state", lambda o: np.r_[np.inf, o["state"][1:]].astype(np.float32), "observation.state: 1 non-finite"),
    ("state", lambda o: np.r_[o["state"][:3], 1e30, o["state"][4:]].astype(np.float32), "at index 3"),
    ("state", lambda o: o["state"][:4], "expected 8 values"),
    ("depth", lambda o: np.where(np.arange(32) == 5, 1e30, o["depth"]).astype(np.float32), "outside [0, 1000] m"),
    ("depth", lambda o: np.where(np.arange(32) == 5, np.inf, o["depth"]).astype(np.float32), "infinity is not allowed"),
    ("K", lambda o: np.array([[1e-30, 0, 16], [0, 40, 16], [0, 0, 1]], np.float32), "fx = 1e-30 px"),
    ("K", lambda o: np.full((3, 3), np.nan, np.float32), "observation.K: 9 non-finite"),
    ("image", lambda o: np.full((32, 32, 3), np.nan, np.float32), "observation.image: 3072 non-finite"),
    ("image", lambda o: np.full((32, 32, 3), 1e30, np.float32), "must lie in [0, 1]"),
    ("instruction", lambda o: 3, "observation.instruction: expected a non-empty string"),
])
def test_bad_numbers_get_an_error_naming_the_field(server, field, value, message):
    obs = _obs(np.random.default_rng(1))
    obs[field] = value(obs)
    before = len(server.policy.seen)
    reply, code = _raw_request(server.port, packb(obs))
    assert isinstance(reply, str) and message in reply and code == 1011  # openpi: text frame, then 1011
    assert len(server.policy.seen) == before  # the policy never saw it
    # NaN depth means "no reading": accepted
    ok = _obs(np.random.default_rng(1))
    ok["depth"][:4] = np.nan
    with PolicyClient(port=server.port) as client:
        assert np.isfinite(client.infer(ok)).all()


def test_openpi_keys_bad_state_names_openpi_field(server):
    obs = _obs(np.random.default_rng(2), openpi=True)
    obs["observation/state"] = np.full(STATE_DIM, 1e30, np.float32)
    with PolicyClient(port=server.port) as client:
        with pytest.raises(PolicyServerError, match="observation/state: "):
            client.infer(obs)
        both = dict(_obs(np.random.default_rng(2), openpi=True), image=obs["observation/image"])
        with pytest.raises(PolicyServerError, match="both 'observation/image' and 'image'|both 'image' and"):
            client.infer(both)


def test_non_finite_actions_are_not_sent():
    bad = np.zeros((CHUNK, ACTION_DIM), np.float32)
    bad[2, 3] = np.nan
    srv = PolicyServer(_StatePolicy(out=bad), port=0).start()
    try:
        with PolicyClient(port=srv.port) as client:
            with pytest.raises(PolicyServerError, match="1 non-finite action values: not sent"):
                client.infer(_obs(np.random.default_rng(3)))
    finally:
        srv.stop()


def test_oversized_request_is_refused_and_server_keeps_serving(server):
    big = _obs(np.random.default_rng(4), size=640)  # ~2.8 MB > the 1 MiB cap
    with connect(f"ws://127.0.0.1:{server.port}", max_size=None) as ws:
        ws.recv(timeout=10)
        ws.send(packb(big))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1009  # message too big
    assert len(server.policy.seen) == 0
    with PolicyClient(port=server.port) as client:
        assert client.infer(_obs(np.random.default_rng(4))).shape == (CHUNK, ACTION_DIM)


def test_concurrent_flood_is_bounded(server):
    """Twelve clients at once against a cap of 3: never more than 3 served together, the rest are
    closed with 1013 (try again later), and every admitted client gets its actions."""
    results: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(12)

    def one(i):
        barrier.wait()
        try:
            with connect(f"ws://127.0.0.1:{server.port}", max_size=None, open_timeout=20) as ws:
                ws.recv(timeout=20)
                time.sleep(0.3)  # hold the slot while the others arrive
                ws.send(packb(_obs(np.random.default_rng(i))))
                out = unpackb(ws.recv(timeout=20))
                res = "ok" if out["actions"].shape == (CHUNK, ACTION_DIM) else "bad"
        except ConnectionClosed as exc:
            res = f"closed {exc.rcvd.code if exc.rcvd else None}"
        with lock:
            results.append(res)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 12 and set(results) <= {"ok", "closed 1013"}, results
    assert 1 <= results.count("ok") and server.peak_active <= 3
    assert results.count("closed 1013") == server.rejected >= 1
    deadline = time.time() + 5
    while server.active and time.time() < deadline:
        time.sleep(0.05)
    assert server.active == 0


def test_reset_control_message(server):
    with PolicyClient(port=server.port) as client:
        client.reset()
        assert server.policy.resets == 1
        assert client.metadata["state_dim"] == STATE_DIM


def test_serve_refuses_checkpoint_without_action_head():
    ckpt = ROOT / "checkpoints" / "tiny_sample"
    if not (ckpt / "model.safetensors").is_file():
        pytest.skip("checkpoints/tiny_sample is not in this checkout")
    proc = subprocess.run([sys.executable, "-m", "vipa.cli", "serve", str(ckpt), "--port", "0"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no action head" in lines[0] and "tiny_sample" in lines[0]


def test_real_openpi_client(server):
    """openpi's WebsocketClientPolicy.infer, unchanged, against `vipa serve`'s protocol."""
    py = _openpi_python()
    if py is None:
        pytest.skip("openpi-client venv not built: run scripts/setup_openpi.sh (or set VIPA_OPENPI_PYTHON); "
                    "openpi-client 0.1.2 pins numpy<2, so it cannot live in the project's venv")
    proc = subprocess.run([str(py), str(ROOT / "scripts" / "check_openpi.py"), f"127.0.0.1:{server.port}",
                           "--requests", "5", "--size", "224"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["actions_shape"] == [CHUNK, ACTION_DIM] and report["metadata"]["name"] == "state-echo"
    assert "observation/state: 8 non-finite values" in report["error"]
    assert server.policy.seen[-1]["instruction"] == "put the bowl on the plate"


_SERVER_SCRIPT = """
import sys, time
import numpy as np
from vipa.infer.server import PolicyServer

class P:
    metadata = {"name": "flood", "chunk": 8, "action_dim": 7, "state_dim": 8}
    def infer(self, obs):
        return np.zeros((8, 7), np.float32)
    def reset(self):
        pass

srv = PolicyServer(P(), port=0).start()  # the defaults of `vipa serve`: 8 clients, 16 MiB a request
print(srv.port, flush=True)
sys.stdin.read()
"""


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def test_flood_of_large_requests_keeps_server_memory_bounded():
    """Ten clients at once, each sending a 63 MB request, against `vipa serve`'s defaults (8 clients,
    16 MiB a request) in its own process: every connection is closed (1009 too big, 1013 over the
    cap), the server's peak memory grows by far less than one request, and it serves afterwards."""
    proc = subprocess.Popen([sys.executable, "-c", _SERVER_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        port = int(proc.stdout.readline())
        with PolicyClient(port=port) as client:  # warm: imports and one reply done before measuring
            client.infer(_obs(np.random.default_rng(0)))
        before, _ = _rss_mb(proc.pid)
        payload = b"\x00" * 63_000_000  # one buffer shared by the ten senders (a bounded client)
        barrier = threading.Barrier(10)
        codes: list[int | None] = []
        lock = threading.Lock()

        def one():
            code = None
            try:
                with connect(f"ws://127.0.0.1:{port}", max_size=2**20, open_timeout=30) as ws:
                    barrier.wait(30)
                    ws.recv(timeout=30)
                    ws.send(payload)
                    ws.recv(timeout=30)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
            except OSError:  # reset while still sending: the server closed first
                code = -1
            with lock:
                codes.append(code)

        threads = [threading.Thread(target=one) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        after, peak = _rss_mb(proc.pid)
        assert len(codes) == 10 and set(codes) <= {1009, 1013, -1}, codes
        assert codes.count(1009) >= 1
        assert peak - before < 50, (before, peak, after)  # one request alone is 63 MB
        with PolicyClient(port=port) as client:
            assert client.infer(_obs(np.random.default_rng(1))).shape == (CHUNK, ACTION_DIM)
        print(f"server RSS {before:.0f} MB -> peak {peak:.0f} MB, after {after:.0f} MB; close codes {sorted(codes)}")
    finally:
        proc.stdin.close()
        proc.wait(30)


def test_metadata_names_the_checkpoint_folder_not_its_path():
    from vipa.infer.predictor import checkpoint_label

    assert checkpoint_label("/srv/users/me/runs/exp1/final") == "exp1/final"
    assert checkpoint_label("/srv/users/me/runs/exp1/checkpoints/step_0000040") == "exp1/step_0000040"
    assert checkpoint_label(Path("/data/ckpts/tiny_sample")) == "tiny_sample"
    assert checkpoint_label(None) == ""


def test_bench_serve_latency_beside_openpi_client(capsys, monkeypatch):
    """`vipa bench serve_latency`: the same requests through our PolicyClient and openpi's own client."""
    py = _openpi_python()
    if py is None:
        pytest.skip("openpi-client venv not built: run scripts/setup_openpi.sh (or set VIPA_OPENPI_PYTHON)")
    monkeypatch.setenv("VIPA_OPENPI_PYTHON", str(py))
    from vipa.cli import main

    assert main(["bench", "serve_latency", "--quick"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["name"] == "serve_latency" and rec["unit"] == "ms" and rec["actions_shape"] == [CHUNK, ACTION_DIM]
    assert rec["requests"] == {"ours": 16, "openpi": 8}
    for side in ("ours_ms", "openpi_ms"):
        assert 0 < rec[side]["median"] <= rec[side]["p90"] <= rec[side]["max"]
    assert rec["ratio"] == pytest.approx(rec["baseline"] / rec["value"], rel=1e-3)
