"""Checks an episode must pass before `vipa export` copies it, and the export's move into place.

An export never copies damage silently: each episode is loaded (annotation + corrections), its
numbers checked (a value marked valid must be finite; K and camera poses finite), its video must
open and hold every frame (the last one decodable), and every depth PNG must exist and read as
uint16 of the episode's size. ``publish`` moves a finished export from its temporary folder into
place with group-readable permissions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from vipa.data._io import set_readable
from vipa.data._lerobot_export import ExportError, episode_features
from vipa.data.episode import SchemaError

if TYPE_CHECKING:
    from vipa.data.reader import Hand3DDataset

PARTIAL_PREFIX = ".partial-"


def check_episode(ds: "Hand3DDataset", episode_id: str, corrected: bool = True) -> str | None:
    """None when episode ``episode_id`` can be exported; else one line naming the episode, file and field."""
    where = f"episode {episode_id!r}"
    try:
        ep = ds.load_episode(episode_id, media=False, corrected=corrected)
    except (SchemaError, ValueError, OSError) as exc:
        return f"{where}: {exc}"
    try:
        episode_features(ep)
    except ExportError as exc:
        return f"{where}: {exc}"
    t = ep.num_frames
    try:
        if ds.has_rgb(episode_id):
            path = ds.episode_dir(episode_id) / "rgb.mp4"
            if not path.is_file():
                return f"{where}: episodes/{episode_id}/rgb.mp4: missing"
            _, _, index = ds._video(episode_id)
            if index.pts.size < t:
                return (f"{where}: episodes/{episode_id}/rgb.mp4: holds {index.pts.size} frames, "
                        f"the episode has {t} (truncated video?)")
            if t:
                ds.rgb_frame(episode_id, t - 1)
        if ds.has_depth(episode_id):
            meta = ds._episode_meta(episode_id)
            for i in range(t):
                ds._depth_counts(episode_id, i, meta)
    except (SchemaError, FileNotFoundError, OSError, ValueError) as exc:
        return f"{where}: {exc}"
    return None


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A path to write the export to, in a hidden ``.partial-*`` folder beside ``out``; on success the
    result is moved onto ``out`` (files 0644, folders 0755); on any error or interrupt the partial
    folder is removed, and a killed process leaves only a hidden ``.partial-*`` folder."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{out.name}-", dir=out.parent))
    try:
        yield tmp / out.name
        publish(tmp / out.name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(src: Path, out: Path) -> None:
    """Group-readable permissions, then move ``src`` onto ``out`` (absent or an empty folder)."""
    set_readable(src)
    if out.exists():
        out.rmdir()
    os.replace(src, out)
