"""Policy server (openpi-style, small): observations in, action chunks out, over a WebSocket.

Message format (msgpack, numpy arrays as typed byte blobs; see vipa.infer.msgpack_numpy):

    on connect     server -> {"type": "metadata", "metadata": {...policy metadata...}}
    request        {"type": "infer", "id": any, "observation": {
                        "image": (H, W, 3) uint8, "depth": (H, W) float32 metres (optional),
                        "K": (3, 3) float32 px, "state": (S,) float32, "instruction": str}}
    response       {"type": "actions", "id": same, "actions": (chunk, A) float32,
                    "timing": {"infer_ms": float, "server_ms": float}}
    request        {"type": "reset", "id": any}      -> {"type": "ok", "id": same}
    error          {"type": "error", "id": same or None, "error": "what was wrong"}

A malformed message gets an error reply and the connection stays open. HTTP ``GET /healthz``
answers 200 "ok". Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import http
import threading
import time
from typing import Any, Protocol

import numpy as np

from vipa.infer.msgpack_numpy import MessageError, packb, unpackb

REQUIRED_OBSERVATION = ("image", "K", "state", "instruction")


class Policy(Protocol):
    """What the server serves: ``infer(observation) -> (chunk, A) actions``."""

    metadata: dict[str, Any]

    def infer(self, observation: dict[str, Any]) -> np.ndarray: ...

    def reset(self) -> None: ...


def validate_observation(obs: Any) -> dict[str, Any]:
    """Check an observation's fields, types and shapes; raise MessageError naming the problem."""
    if not isinstance(obs, dict):
        raise MessageError("observation must be a map")
    missing = [k for k in REQUIRED_OBSERVATION if k not in obs]
    if missing:
        raise MessageError(f"observation is missing {missing}")
    img = obs["image"]
    if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8):
        raise MessageError(f"observation.image must be (H, W, 3) uint8, got {getattr(img, 'shape', type(img))}")
    K = obs["K"]
    if not (isinstance(K, np.ndarray) and K.shape == (3, 3)):
        raise MessageError("observation.K must be a (3, 3) array")
    if not (isinstance(obs["state"], np.ndarray) and obs["state"].ndim == 1):
        raise MessageError("observation.state must be a 1-D array")
    if not isinstance(obs["instruction"], str):
        raise MessageError("observation.instruction must be a string")
    depth = obs.get("depth")
    if depth is not None and not (isinstance(depth, np.ndarray) and depth.shape == img.shape[:2]):
        raise MessageError(f"observation.depth must be (H, W) = {img.shape[:2]}")
    return obs


class PolicyServer:
    """Serves one policy; one request at a time (the model is not re-entrant)."""

    def __init__(self, policy: Policy, host: str = "127.0.0.1", port: int = 8765):
        self.policy, self.host, self.port = policy, host, port
        self._lock = threading.Lock()
        self._server = None

    def _health(self, connection, request):
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        return None

    def _handle_message(self, raw: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        msg_id = None
        try:
            msg = unpackb(raw)
            if not isinstance(msg, dict):
                raise MessageError("message must be a map")
            msg_id = msg.get("id")
            kind = msg.get("type")
            if kind == "reset":
                with self._lock:
                    self.policy.reset()
                return {"type": "ok", "id": msg_id}
            if kind != "infer":
                raise MessageError(f"unknown message type {kind!r} (expected 'infer' or 'reset')")
            obs = validate_observation(msg.get("observation"))
            with self._lock:
                t1 = time.perf_counter()
                actions = np.asarray(self.policy.infer(obs), np.float32)
                infer_ms = (time.perf_counter() - t1) * 1e3
            return {"type": "actions", "id": msg_id, "actions": actions,
                    "timing": {"infer_ms": infer_ms, "server_ms": (time.perf_counter() - t0) * 1e3}}
        except MessageError as exc:
            return {"type": "error", "id": msg_id, "error": str(exc)}
        except Exception as exc:  # the policy failed on this input: report, keep serving
            return {"type": "error", "id": msg_id, "error": f"{type(exc).__name__}: {exc}"}

    def _handler(self, websocket) -> None:
        websocket.send(packb({"type": "metadata", "metadata": self.policy.metadata}))
        for raw in websocket:
            websocket.send(packb(self._handle_message(raw)))

    def start(self) -> "PolicyServer":
        """Start serving in a background thread; ``self.port`` is the bound port (0 = any free)."""
        from websockets.sync.server import serve

        self._server = serve(self._handler, self.host, self.port, process_request=self._health,
                             max_size=64 * 2**20)
        self.port = self._server.socket.getsockname()[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def serve_forever(self) -> None:
        from websockets.sync.server import serve

        with serve(self._handler, self.host, self.port, process_request=self._health,
                   max_size=64 * 2**20) as server:
            self._server = server
            print(f"vipa serve: ws://{self.host}:{self.port} (health: http://{self.host}:{self.port}/healthz)")
            server.serve_forever()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


class PolicyClient:
    """Small synchronous client: ``infer(observation) -> actions``; ``metadata`` from the server."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, timeout: float = 30.0):
        from websockets.sync.client import connect

        self._ws = connect(f"ws://{host}:{port}", max_size=64 * 2**20, open_timeout=timeout).__enter__()
        hello = unpackb(self._ws.recv(timeout=timeout))
        self.metadata: dict[str, Any] = hello.get("metadata", {})
        self.timeout = timeout
        self.last_timing: dict[str, float] = {}
        self._next_id = 0

    def _call(self, msg: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        msg["id"] = self._next_id
        self._ws.send(packb(msg))
        reply = unpackb(self._ws.recv(timeout=self.timeout))
        if reply.get("type") == "error":
            raise RuntimeError(f"policy server: {reply['error']}")
        return reply

    def infer(self, observation: dict[str, Any]) -> np.ndarray:
        t0 = time.perf_counter()
        reply = self._call({"type": "infer", "observation": observation})
        self.last_timing = dict(reply.get("timing", {}), round_trip_ms=(time.perf_counter() - t0) * 1e3)
        return reply["actions"]

    def reset(self) -> None:
        self._call({"type": "reset"})

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _serve(args: argparse.Namespace) -> int:
    from vipa.infer.policy import PredictorPolicy

    policy = PredictorPolicy.load(args.checkpoint, replan=args.replan)
    PolicyServer(policy, host=args.host, port=args.port).serve_forever()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a checkpoint's action chunks over a WebSocket",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint folder with an action head (from `vipa train post`)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--replan", type=int, default=8, help="actions executed per chunk (metadata only)")
    p.set_defaults(func=_serve)
