"""Talk to a running `vipa serve` with openpi's own client (openpi-client 0.1.2), unchanged.

Run with the Python of a venv that has openpi-client (scripts/setup_openpi.sh makes .venv-openpi):

    .venv-openpi/bin/python scripts/check_openpi.py HOST:PORT [--requests 20] [--size 224] [--state-dim 8]

Sends openpi's LIBERO-example observations (``observation/image``, ``observation/wrist_image``,
``observation/state``, ``prompt``), checks each reply's ``actions`` is a finite (chunk, action_dim) array
matching the server's metadata, then sends a NaN state and checks the error comes back as openpi's
client reports it (RuntimeError with the server's text). Prints one JSON line: metadata, action
shape, latency per request in ms (median, p90, max, and each request's) and the error text.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from openpi_client.websocket_client_policy import WebsocketClientPolicy


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("server", help="HOST:PORT of `vipa serve`")
    p.add_argument("--requests", type=int, default=20, help="timed requests")
    p.add_argument("--size", type=int, default=224, help="image side in pixels")
    p.add_argument("--state-dim", type=int, default=None, help="default: the server's metadata state_dim")
    p.add_argument("--prompt", default="put the bowl on the plate")
    args = p.parse_args()
    host, _, port = args.server.rpartition(":")
    policy = WebsocketClientPolicy(host or "127.0.0.1", int(port))
    meta = policy.get_server_metadata()
    state_dim = args.state_dim or int(meta.get("state_dim", 8))
    rng = np.random.default_rng(0)
    lat = []
    shape = None
    for _ in range(args.requests):
        obs = {"observation/image": rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8),
               "observation/wrist_image": rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8),
               "observation/state": rng.normal(size=state_dim).astype(np.float32),
               "prompt": args.prompt}
        t0 = time.perf_counter()
        out = policy.infer(obs)
        lat.append((time.perf_counter() - t0) * 1e3)
        actions = out["actions"]
        if not (isinstance(actions, np.ndarray) and actions.ndim == 2 and np.isfinite(actions).all()):
            print(f"check_openpi: bad actions {getattr(actions, 'shape', actions)}", file=sys.stderr)
            return 1
        if "action_dim" in meta and actions.shape[1] != meta["action_dim"]:
            print(f"check_openpi: actions {actions.shape} vs metadata action_dim {meta['action_dim']}", file=sys.stderr)
            return 1
        shape = list(actions.shape)
    bad = dict(obs, **{"observation/state": np.full(state_dim, np.nan, np.float32)})
    try:
        policy.infer(bad)
        error = None
    except RuntimeError as exc:
        error = str(exc)
    lat_a = np.asarray(lat)
    print(json.dumps({"metadata": meta, "actions_shape": shape, "requests": len(lat),
                      "latency_ms": {"median": float(np.median(lat_a)), "p90": float(np.percentile(lat_a, 90)),
                                     "max": float(lat_a.max())},
                      "latency_per_request_ms": [round(float(x), 3) for x in lat_a],
                      "server_timing": {k: float(v) for k, v in out.get("server_timing", {}).items()},
                      "error": error}))
    return 0 if error and "observation/state" in error else 1


if __name__ == "__main__":
    sys.exit(main())
