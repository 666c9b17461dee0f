"""Shared by the annotation benchmarks: the loops they time side by side, and the clocks they read.

Each loop returns a ``Run``: process CPU seconds (all threads), wall seconds, seconds the detector
waited for the decode thread (``wait``), frames and hands found. Clocks, because these benchmarks run
on a shared 2-core machine where wall-clock time measures the scheduler as much as the code:

* ``cpu``: process CPU time of the loop (decode + detection + every helper thread);
* ``idle_cores``: what the loop would take with a core free for the decode thread, i.e. the CPU
  time of everything but decoding (``cpu`` minus the CPU of decoding the same frames alone,
  measured in the same process) plus the time detection actually waited for a frame. For a loop
  without a decode thread (MediaPipe on frames decoded beforehand) it is its CPU time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class Run:
    frames: int
    cpu: float
    wall: float
    wait: float = 0.0  # s the detector waited for the decode thread
    hands: int = 0  # hands found over all frames
    stats: dict = field(default_factory=dict)  # search steps {name: {"calls", "seconds"}} (CPU of the main thread)


def clock(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def best(runs: list[Run]) -> Run:
    """Minimum CPU, wall and wait over repeats (the other fields of the first)."""
    r = runs[0]
    return Run(r.frames, min(x.cpu for x in runs), min(x.wall for x in runs), min(x.wait for x in runs),
               r.hands, r.stats)


def decoded_frames(path: Path, max_width: int, max_frames: int | None) -> list:
    from annotators.io import open_source

    with open_source(path, max_width=max_width, max_frames=max_frames) as src:
        return [f.rgb for f in src]


def decode_only(path: Path, max_width: int, max_frames: int | None) -> Run:
    """Decoding alone (``annotators.io.open_source``), for the decode share of the CPU time."""
    frames, cpu, wall = clock(lambda: len(decoded_frames(path, max_width, max_frames)))
    return Run(frames, cpu, wall)


def mediapipe_on_frames(frames: list) -> Run:
    """``mp.solutions.hands.Hands(static_image_mode=False, max_num_hands=2).process`` per pre-decoded frame."""
    import mediapipe as mp

    def go() -> int:
        with mp.solutions.hands.Hands(static_image_mode=False, max_num_hands=2) as graph:
            return sum(len(graph.process(f).multi_hand_landmarks or ()) for f in frames)

    hands, cpu, wall = clock(go)
    return Run(len(frames), cpu, wall, 0.0, hands)


def mediapipe_sequential(path: Path, width: int, height: int, max_frames: int | None) -> Run:
    """The minimal script: PyAV decode + resize, then MediaPipe, one frame after the other (no overlap)."""
    import av
    import mediapipe as mp

    def go() -> tuple[int, int]:
        n = hands = 0
        with mp.solutions.hands.Hands(static_image_mode=False, max_num_hands=2) as graph:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    if max_frames is not None and n >= max_frames:
                        break
                    rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BILINEAR")
                    hands += len(graph.process(rgb).multi_hand_landmarks or ())
                    n += 1
        return n, hands

    (n, hands), cpu, wall = clock(go)
    return Run(n, cpu, wall, 0.0, hands)


def ours_loop(path: Path, backend, max_width: int, max_frames: int | None) -> Run:
    """The pipeline's frame loop: ``open_frames`` (decode thread, ``annotators.io.FrameStream``) feeding
    ``detect_hands`` with ``backend`` as the frames arrive."""
    from annotators.pipeline import DecodeConfig, detect_hands, open_frames

    stats0 = backend.search_stats() if hasattr(backend, "search_stats") else {}

    def go():
        dec = open_frames(path, DecodeConfig(max_width=max_width, max_frames=max_frames))
        obs = detect_hands(dec.frames, backend)
        return dec, obs

    (dec, obs), cpu, wall = clock(go)
    stats1 = backend.search_stats() if hasattr(backend, "search_stats") else {}
    stats = {k: {"calls": v["calls"] - stats0.get(k, {}).get("calls", 0),
                 "seconds": v["seconds"] - stats0.get(k, {}).get("seconds", 0.0)} for k, v in stats1.items()}
    hands = int(sum(obs.present[s].sum() for s in obs.present))
    return Run(len(dec.frames), cpu, wall, dec.frames.prefetch.wait_s, hands, stats)


def idle_cores_s(run: Run, decode: Run | None) -> float:
    """Seconds the run would take with a core free for decoding (see the module docstring)."""
    if decode is None:
        return run.cpu
    return max(run.cpu - decode.cpu, 0.0) + run.wait


def search_cost(on: Run, off: Run, decode: Run | None) -> dict[str, Any]:
    """What the hand search costs (ms per frame, CPU) and what it finds (hands beyond the tracker's)."""
    n = on.frames
    steps = {k: round(1000 * v["seconds"] / n, 2) for k, v in on.stats.items()}
    return {
        "ms_per_frame_cpu": round(1000 * (idle_cores_s(on, decode) - idle_cores_s(off, decode)) / n, 2),
        "steps_ms_per_frame": steps,
        "hands_found_on": on.hands,
        "hands_found_off": off.hands,
        "extra_hands": on.hands - off.hands,
    }
