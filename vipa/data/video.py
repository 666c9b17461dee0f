"""RGB video of an episode: H.264 encoding, frame-accurate seeking and a decoded-frame cache.

Random access seeks to the keyframe before the wanted frame and decodes forward from there
(never the whole video), keeping a few frames around it in ``FRAME_CACHE``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from vipa.data.episode import SchemaError

__all__ = ["FRAME_CACHE", "VideoFrameCache", "VideoIndex", "decode_all", "decode_frame", "encode_h264"]


def encode_h264(frames: np.ndarray, path: Path, fps: float, crf: int = 18, gop: int = 30,
                max_bytes_per_frame: float | None = None) -> None:
    """(T, H, W, 3) uint8 RGB -> H.264 yuv420p mp4 at ``path`` (odd sizes edge-padded; decoders
    crop back to H x W). ``max_bytes_per_frame``: cap x264's bit rate (capped CRF: a VBV of that many
    bytes per frame at ``fps``, half a second of buffer), e.g. at the source video's own bytes per frame
    so a re-encode of a compressed source is never larger than the source."""
    import av
    from fractions import Fraction

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"video frames: expected (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    rate = Fraction(float(fps)).limit_denominator(1001)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "g": str(gop)}
        if max_bytes_per_frame is not None:
            if not (math.isfinite(max_bytes_per_frame) and max_bytes_per_frame > 0):
                raise ValueError(f"max_bytes_per_frame: expected a positive number, got {max_bytes_per_frame}")
            bits_s = int(max_bytes_per_frame * 8 * float(fps))
            stream.options.update({"maxrate": str(bits_s), "bufsize": str(bits_s // 2)})
        for i in range(t):
            img = frames[i]
            if img.shape[0] != stream.height or img.shape[1] != stream.width:
                img = np.pad(img, ((0, stream.height - h), (0, stream.width - w), (0, 0)), mode="edge")
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts = i
            vf.time_base = 1 / rate
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


class VideoFrameCache:
    """Thread-safe LRU of decoded RGB video frames, bounded in bytes (one per process, shared by all
    datasets). Keys are (video file's stat key, frame index)."""

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._d: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: tuple, value: np.ndarray) -> None:
        with self._lock:
            if key in self._d:
                self._bytes -= self._d.pop(key).nbytes
            self._d[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes and len(self._d) > 1:
                _, old = self._d.popitem(last=False)
                self._bytes -= old.nbytes


FRAME_CACHE = VideoFrameCache()


class VideoIndex:
    """Presentation timestamps of every frame and the keyframes of one mp4 (demuxed, not decoded)."""

    def __init__(self, path: Path) -> None:
        import av  # heavy; loaded on first use

        pts, keys = [], []
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            for pkt in c.demux(stream):
                if pkt.pts is None or pkt.size == 0:
                    continue
                pts.append(pkt.pts)
                if pkt.is_keyframe:
                    keys.append(pkt.pts)
        self.pts = np.sort(np.asarray(pts, np.int64))
        self.index_of = {int(p): i for i, p in enumerate(self.pts)}
        self.key_frames = np.sort(np.asarray([self.index_of[int(k)] for k in keys], np.int64))
        self.lock = threading.Lock()

    def keyframe_before(self, i: int) -> int:
        """Index of the last keyframe at or before frame ``i`` (0 when there are none)."""
        j = np.searchsorted(self.key_frames, i, side="right") - 1
        return int(self.key_frames[max(j, 0)]) if self.key_frames.size else 0



def decode_frame(path: Path, key: tuple, index: VideoIndex, i: int, height: int, width: int, *,
                 prefetch: int, lookbehind: int, where: str) -> np.ndarray:
    """Frame ``i`` of the video at ``path`` as (H, W, 3) uint8 RGB, a copy the caller owns.

    ``key`` identifies the file's current version (its stat key) in FRAME_CACHE. On a miss,
    decodes from the keyframe before ``i`` up to ``i + prefetch`` and caches frames from
    ``i - lookbehind`` on. SchemaError naming ``where`` when the frame cannot be decoded.
    """
    import av

    cached = FRAME_CACHE.get((key, i))
    if cached is not None:
        return cached.copy()
    start = index.keyframe_before(i)
    stop = min(i + prefetch, index.pts.size - 1)
    with index.lock, av.open(str(path)) as c:
        stream = c.streams.video[0]
        c.seek(int(index.pts[start]), stream=stream, backward=True, any_frame=False)
        for frame in c.decode(stream):
            j = index.index_of.get(frame.pts) if frame.pts is not None else None
            if j is None or j < max(start, i - lookbehind):
                continue  # decoded (needed to reach i) but not converted: RGB conversion costs
            arr = frame.to_ndarray(format="rgb24")[:height, :width]
            FRAME_CACHE.put((key, j), arr)
            if j >= stop:
                break
    out = FRAME_CACHE.get((key, i))
    if out is None:
        raise SchemaError(f"{where}: frame {i} could not be decoded")
    return out.copy()


def decode_all(path: Path, num_frames: int, height: int, width: int, where: str) -> np.ndarray:
    """All frames as (T, H, W, 3) uint8 RGB (one sequential decode); SchemaError naming ``where``
    when the video cannot be decoded or holds another number of frames than ``num_frames``."""
    import av

    t, h, w = num_frames, height, width
    out = np.empty((t, h, w, 3), np.uint8)
    n = 0
    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in c.decode(stream):
                if n >= t:
                    n += 1
                    break
                out[n] = frame.to_ndarray(format="rgb24")[:h, :w]
                n += 1
    except Exception as exc:  # av raises its own error classes
        raise SchemaError(f"{where}: cannot decode ({exc})") from None
    if n != t:
        raise SchemaError(f"{where}: has {'more than ' if n > t else ''}{n} frames, episode has {t}")
    return out


def source_bytes_per_frame(source_info: dict | None) -> float | None:
    """Bytes per frame of the video file an episode was decoded from (``episode.extra["source_info"]``,
    annotators.io.SourceInfo), or None when it is no video file on this disk. Per stored frame: a
    source sampled every k-th frame gives k source frames' bytes to each stored one."""
    if not source_info or source_info.get("kind") != "video":
        return None
    path = Path(str(source_info.get("path", "")))
    n = int(source_info.get("source_num_frames") or 0)
    if n <= 0 or not path.is_file():
        return None
    return path.stat().st_size / n * max(1, int(source_info.get("frame_step") or 1))
