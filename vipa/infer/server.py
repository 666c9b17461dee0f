"""Policy server speaking openpi's WebSocket protocol: observations in, action chunks out.

``openpi_client.websocket_client_policy.WebsocketClientPolicy`` (openpi-client 0.1.2) works unchanged;
``PolicyClient`` below is our own small client for the same protocol. Messages are msgpack with
openpi's numpy encoding (vipa.infer.msgpack_numpy).

    on connect   server -> the policy's metadata map (bare): name, chunk, action_dim, state_dim, ...
    request      an observation map (bare; keys below)
    response     {"actions": (chunk, action_dim) float32, "server_timing": {"infer_ms": float,
                  "prev_total_ms": float (from the second request on)}}
    control      {"__ctrl__": "reset" | "episode_start" | "episode_end"} -> {"__ack__": same}
                 (reset and episode_start reset the policy's per-episode state)
    error        one text frame naming the problem ("observation/state: 2 non-finite values ..."; a
                 traceback when the policy itself failed), then the server closes the connection with
                 code 1011, as openpi's server does; the client raises with that text.

Observation keys (openpi's LIBERO example's keys are accepted beside ours; give one of each pair):

    image         | observation/image        (H, W, 3) uint8 RGB (or float in [0, 1]; (3, H, W) is transposed)
    wrist_image   | observation/wrist_image  same, optional
    state         | observation/state        (S,) float, SI units (m, rad); S = metadata["state_dim"]
    instruction   | prompt                   str, the task in words
    depth         | observation/depth        (H, W) float metres along the optical axis; NaN = no reading;
                                             needed by checkpoints with a 3D encoder (metadata["use_3d"])
    K             | observation/K            (3, 3) pinhole intrinsics in pixels; needed with depth
    wrist_depth, wrist_K, camera_pose (4, 4), wrist_camera_pose: optional, checked the same way

Every number is checked before the policy sees it: non-finite values (NaN allowed only in depth),
|state| > 1e4, depth outside [0, 1e3] m, focal lengths outside [1, 1e6] px, and wrong shapes or dtypes
are error replies naming the field. Actions are checked finite before they are sent. Limits: at most
``max_connections`` clients at once (more are closed at once with code 1013, "try again later") and
``max_request_bytes`` per message (a bigger one closes the connection with code 1009). HTTP
``GET /healthz`` answers 200 "ok". Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import traceback
from typing import Any, Protocol

import numpy as np

from vipa.infer.msgpack_numpy import MessageError, packb, unpackb
from vipa.ranges import count, positive, tcp_port

MAX_STATE_ABS = 1e4  # any state value beyond this (m, rad, ...) is a unit or sensor error
MAX_DEPTH_M = 1e3
FOCAL_RANGE_PX = (1.0, 1e6)
MAX_IMAGE_SIDE = 4096
DEFAULT_MAX_CONNECTIONS = 8
DEFAULT_MAX_REQUEST_BYTES = 16 * 2**20
CLOSE_INTERNAL_ERROR = 1011  # what openpi's server closes with after the error text frame
CLOSE_TRY_AGAIN_LATER = 1013

# openpi's LIBERO example keys -> ours
ALIASES = {"observation/image": "image", "observation/wrist_image": "wrist_image",
           "observation/state": "state", "prompt": "instruction", "observation/depth": "depth",
           "observation/wrist_depth": "wrist_depth", "observation/K": "K", "observation/wrist_K": "wrist_K"}
REQUIRED_OBSERVATION = ("image", "state", "instruction")


class Policy(Protocol):
    """What the server serves: ``infer(observation) -> (chunk, A) actions``."""

    metadata: dict[str, Any]

    def infer(self, observation: dict[str, Any]) -> np.ndarray: ...

    def reset(self) -> None: ...


def _array(obs: dict, key: str, name: str) -> np.ndarray:
    v = obs[key]
    if isinstance(v, (list, tuple)):
        try:
            v = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise MessageError(f"{name}: not a numeric array") from exc
    if not isinstance(v, np.ndarray) or v.dtype.kind not in "biuf":
        raise MessageError(f"{name}: expected a numeric array, got {type(v).__name__}"
                           f"{'' if not isinstance(v, np.ndarray) else ' of ' + str(v.dtype)}")
    return v


def _check_finite(a: np.ndarray, name: str, allow_nan: bool = False) -> None:
    if a.dtype.kind != "f":
        return
    bad = ~np.isfinite(a) if not allow_nan else np.isinf(a)
    n = int(bad.sum())
    if n:
        first = a[bad].ravel()[0]
        raise MessageError(f"{name}: {n} non-finite value{'s' if n > 1 else ''} (first: {first})"
                           + (" (NaN marks a missing reading; infinity is not allowed)" if allow_nan else ""))


def _image(obs: dict, key: str, name: str) -> np.ndarray:
    img = _array(obs, key, name)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[2] != 3:
        img = np.transpose(img, (1, 2, 0))
    if img.ndim != 3 or img.shape[2] != 3:
        raise MessageError(f"{name}: expected (H, W, 3) RGB, got shape {img.shape}")
    if not (1 <= img.shape[0] <= MAX_IMAGE_SIDE and 1 <= img.shape[1] <= MAX_IMAGE_SIDE):
        raise MessageError(f"{name}: {img.shape[1]}x{img.shape[0]} px is outside 1..{MAX_IMAGE_SIDE} px a side")
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if img.dtype.kind != "f":
        raise MessageError(f"{name}: expected uint8 (0-255) or float (0-1), got {img.dtype}")
    _check_finite(img, name)
    lo, hi = float(img.min()), float(img.max())
    if lo < 0.0 or hi > 1.0:
        raise MessageError(f"{name}: float images must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    return np.round(img * 255.0).astype(np.uint8)


def _intrinsics(obs: dict, key: str, name: str) -> np.ndarray:
    K = _array(obs, key, name).astype(np.float64)
    if K.shape != (3, 3):
        raise MessageError(f"{name}: expected (3, 3), got shape {K.shape}")
    _check_finite(K, name)
    lo, hi = FOCAL_RANGE_PX
    for label, f in (("fx", K[0, 0]), ("fy", K[1, 1])):
        if not lo <= f <= hi:
            raise MessageError(f"{name}: {label} = {f:.4g} px is outside [{lo:g}, {hi:g}] px")
    if np.abs(K[:2, 2]).max() > hi or abs(K[0, 1]) > hi:
        raise MessageError(f"{name}: principal point or skew beyond {hi:g} px")
    if not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise MessageError(f"{name}: last row must be [0, 0, 1], got {K[2].tolist()}")
    return K.astype(np.float32)


def _depth(obs: dict, key: str, name: str, hw: tuple[int, int]) -> np.ndarray:
    d = _array(obs, key, name)
    if d.dtype.kind != "f":
        raise MessageError(f"{name}: expected float metres, got {d.dtype} (convert counts to metres first)")
    if d.shape != hw:
        raise MessageError(f"{name}: expected (H, W) = {hw} like its image, got {d.shape}")
    _check_finite(d, name, allow_nan=True)
    with np.errstate(invalid="ignore"):
        bad = (d < 0) | (d > MAX_DEPTH_M)
    if bad.any():
        raise MessageError(f"{name}: {int(bad.sum())} values outside [0, {MAX_DEPTH_M:g}] m "
                           f"(first: {d[bad].ravel()[0]:.4g})")
    return d.astype(np.float32)


def validate_observation(obs: Any, state_dim: int | None = None) -> dict[str, Any]:
    """openpi or vipa keys -> our keys, every field checked; raise MessageError naming the field.

    Unknown keys are passed on unchanged after the same finiteness check."""
    if not isinstance(obs, dict):
        raise MessageError("observation must be a map")
    names: dict[str, str] = {}
    for key in obs:
        if not isinstance(key, str):
            raise MessageError(f"observation keys must be strings, got {key!r}")
        ours = ALIASES.get(key, key)
        if ours in names:
            raise MessageError(f"observation has both {names[ours]!r} and {key!r}: give one")
        names[ours] = key
    missing = [k for k in REQUIRED_OBSERVATION if k not in names]
    if missing:
        raise MessageError("observation is missing " + ", ".join(
            f"{k!r} (or {next(a for a, o in ALIASES.items() if o == k)!r})" for k in missing))
    out: dict[str, Any] = {}
    for ours, key in names.items():
        name = key if "/" in key else f"observation.{key}"
        if ours == "instruction":
            text = obs[key]
            if not isinstance(text, str) or not text.strip():
                raise MessageError(f"{name}: expected a non-empty string")
            if len(text) > 4096:
                raise MessageError(f"{name}: {len(text)} characters (at most 4096)")
            out[ours] = text
        elif ours in ("image", "wrist_image"):
            out[ours] = _image(obs, key, name)
        elif ours == "state":
            s = _array(obs, key, name)
            if s.ndim != 1:
                raise MessageError(f"{name}: expected a 1-D array, got shape {s.shape}")
            if state_dim is not None and s.shape[0] != state_dim:
                raise MessageError(f"{name}: expected {state_dim} values (metadata state_dim), got {s.shape[0]}")
            _check_finite(s, name)
            big = np.abs(s.astype(np.float64)) > MAX_STATE_ABS
            if big.any():
                raise MessageError(f"{name}: |value| > {MAX_STATE_ABS:g} at index {int(np.argmax(big))} "
                                   f"({s[big][0]:.4g}): not a robot state in SI units")
            out[ours] = s.astype(np.float32)
        elif ours in ("K", "wrist_K"):
            out[ours] = _intrinsics(obs, key, name)
        elif ours in ("depth", "wrist_depth"):
            continue  # after the images (their shape)
        else:  # passed on; float numbers checked finite
            v = obs[key]
            if isinstance(v, (float, np.floating)) or (isinstance(v, np.ndarray) and v.dtype.kind == "f"):
                _check_finite(np.asarray(v), name)
            out[ours] = v
    for d_key, img_key, k_key in (("depth", "image", "K"), ("wrist_depth", "wrist_image", "wrist_K")):
        if d_key in names:
            if img_key not in out:
                raise MessageError(f"{names[d_key]}: depth without its image {img_key!r}")
            out[d_key] = _depth(obs, names[d_key], names[d_key] if "/" in names[d_key] else f"observation.{d_key}",
                                out[img_key].shape[:2])
            if k_key not in out:
                raise MessageError(f"observation.{d_key} needs its intrinsics {k_key!r}")
    return out


def check_actions(actions: Any) -> np.ndarray:
    """The policy's output as (chunk, A) float32; raise MessageError if it is not finite."""
    a = np.asarray(actions, np.float32)
    if a.ndim != 2:
        raise MessageError(f"policy returned actions of shape {a.shape}, expected (chunk, action_dim)")
    bad = ~np.isfinite(a)
    if bad.any():
        raise MessageError(f"policy returned {int(bad.sum())} non-finite action values: not sent")
    return a


class PolicyServer:
    """Serves one policy to at most ``max_connections`` clients; one inference at a time."""

    def __init__(self, policy: Policy, host: str = "127.0.0.1", port: int = 8765,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        if max_connections < 1 or max_request_bytes < 1024:
            raise ValueError("max_connections must be >= 1 and max_request_bytes >= 1024")
        self.policy, self.host, self.port = policy, host, port
        self.max_connections, self.max_request_bytes = max_connections, max_request_bytes
        self.metadata: dict[str, Any] = dict(getattr(policy, "metadata", {}) or {})
        self._state_dim = self.metadata.get("state_dim")
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.active = 0
        self.peak_active = 0
        self.rejected = 0
        self._server = None

    def _health(self, connection, request):
        if request.path == "/healthz":
            import http

            return connection.respond(http.HTTPStatus.OK, "ok\n")
        return None

    def _reply(self, raw: Any, prev_total_ms: float | None) -> dict[str, Any]:
        if isinstance(raw, str):
            raise MessageError("expected a binary msgpack message, got a text frame")
        obs = unpackb(raw)
        if isinstance(obs, dict) and "__ctrl__" in obs:
            ctrl = obs["__ctrl__"]
            if ctrl in ("reset", "episode_start"):
                with self._lock:
                    self.policy.reset()
            elif ctrl != "episode_end":
                raise MessageError(f"unknown control {ctrl!r} (reset, episode_start, episode_end)")
            return {"__ack__": ctrl}
        obs = validate_observation(obs, self._state_dim)
        with self._lock:
            t1 = time.perf_counter()
            actions = self.policy.infer(obs)
            infer_ms = (time.perf_counter() - t1) * 1e3
        timing = {"infer_ms": infer_ms}
        if prev_total_ms is not None:
            timing["prev_total_ms"] = prev_total_ms
        return {"actions": check_actions(actions), "server_timing": timing}

    def _handler(self, websocket) -> None:
        from websockets.exceptions import ConnectionClosed

        with self._count_lock:
            busy = self.active >= self.max_connections
            if busy:
                self.rejected += 1
            else:
                self.active += 1
                self.peak_active = max(self.peak_active, self.active)
        if busy:
            websocket.close(CLOSE_TRY_AGAIN_LATER, f"server busy: {self.max_connections} clients connected")
            return
        try:
            websocket.send(packb(self.metadata))
            prev_total_ms = None
            for raw in websocket:
                t0 = time.perf_counter()
                try:
                    reply = packb(self._reply(raw, prev_total_ms))
                except MessageError as exc:
                    websocket.send(f"MessageError: {exc}")
                    websocket.close(CLOSE_INTERNAL_ERROR, "bad request; message in previous frame")
                    return
                except Exception:  # the policy failed: openpi sends the traceback, then closes
                    websocket.send(traceback.format_exc())
                    websocket.close(CLOSE_INTERNAL_ERROR, "Internal server error. Traceback included in previous frame.")
                    return
                websocket.send(reply)
                prev_total_ms = (time.perf_counter() - t0) * 1e3
        except ConnectionClosed:
            pass
        finally:
            with self._count_lock:
                self.active -= 1

    def _serve(self):
        from websockets.sync.server import serve

        # max_queue bounds frames buffered per connection, so memory stays ~ clients x max_request_bytes
        return serve(self._handler, self.host, self.port, process_request=self._health, compression=None,
                     max_size=self.max_request_bytes, max_queue=2)

    def start(self) -> "PolicyServer":
        """Start serving in a background thread; ``self.port`` is the bound port (0 = any free)."""
        self._server = self._serve()
        self.port = self._server.socket.getsockname()[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def serve_forever(self) -> None:
        with self._serve() as server:
            self._server = server
            self.port = server.socket.getsockname()[1]
            print(f"vipa serve: ws://{self.host}:{self.port} (health: http://{self.host}:{self.port}/healthz; "
                  f"at most {self.max_connections} clients, {self.max_request_bytes / 2**20:g} MiB a request)",
                  flush=True)
            server.serve_forever()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


class PolicyServerError(RuntimeError):
    """The server answered a request with an error (its text frame), then closed the connection."""


class PolicyClient:
    """Small synchronous client for the same protocol: ``infer(observation) -> (chunk, A) actions``.

    After an error reply (the server closes the connection) the next call reconnects."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, timeout: float = 30.0,
                 max_size: int | None = 64 * 2**20):
        self.host, self.port, self.timeout, self.max_size = host, port, timeout, max_size
        self.last_timing: dict[str, float] = {}
        self.metadata: dict[str, Any] = {}
        self._ws = None
        self._connect()

    def _connect(self) -> None:
        from websockets.sync.client import connect

        self._ws = connect(f"ws://{self.host}:{self.port}", max_size=self.max_size, compression=None,
                           open_timeout=self.timeout).__enter__()
        hello = self._ws.recv(timeout=self.timeout)
        if isinstance(hello, str):
            raise PolicyServerError(f"policy server: {hello}")
        self.metadata = unpackb(hello)

    def _call(self, msg: dict[str, Any]) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed

        if self._ws is None:
            self._connect()
        try:
            self._ws.send(packb(msg))
            reply = self._ws.recv(timeout=self.timeout)
        except ConnectionClosed as exc:
            self._ws = None
            raise PolicyServerError(f"policy server closed the connection ({exc})") from exc
        if isinstance(reply, str):  # openpi's error: a text frame, then the server closes
            self._ws.close()
            self._ws = None
            raise PolicyServerError(f"policy server: {reply.strip()}")
        return unpackb(reply)

    def infer(self, observation: dict[str, Any]) -> np.ndarray:
        t0 = time.perf_counter()
        reply = self._call(observation)
        self.last_timing = dict(reply.get("server_timing", {}), round_trip_ms=(time.perf_counter() - t0) * 1e3)
        return reply["actions"]

    def reset(self) -> None:
        self._call({"__ctrl__": "reset"})

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _serve(args: argparse.Namespace) -> int:
    from vipa.infer.policy import PredictorPolicy
    from vipa.model.checkpoint import CheckpointError

    try:
        policy = PredictorPolicy.load(args.checkpoint, replan=args.replan)
        server = PolicyServer(policy, host=args.host, port=args.port, max_connections=args.max_connections,
                              max_request_bytes=int(args.max_request_mb * 2**20))
    except (ValueError, FileNotFoundError, CheckpointError, OSError) as exc:
        print(f"vipa serve: {args.checkpoint}: {exc}", file=sys.stderr)
        return 2
    try:
        server.serve_forever()
    except OSError as exc:  # port in use, cannot bind
        print(f"vipa serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = sub.add_parser("serve", help="serve a checkpoint's action chunks over openpi's WebSocket protocol",
                       description=__doc__, formatter_class=Formatter)
    p.add_argument("checkpoint", help="checkpoint folder with an action head (from `vipa train post`)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=tcp_port(), default=8765, help="TCP port (0 = any free port)")
    p.add_argument("--replan", type=count(), default=8, help="actions executed per chunk (metadata only)")
    p.add_argument("--max-connections", type=count(), default=DEFAULT_MAX_CONNECTIONS,
                   help="clients served at once; more are closed with code 1013")
    p.add_argument("--max-request-mb", type=positive(), default=DEFAULT_MAX_REQUEST_BYTES / 2**20,
                   help="largest request in MiB; a bigger one closes its connection (code 1009)")
    p.set_defaults(func=_serve)
