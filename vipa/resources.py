"""Where the project's bundled files are (editable or source-tree installs)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_ROOT / "samples"  # real sample media with their licences
SAMPLE_VIDEO = SAMPLES_DIR / "human_hand_video" / "human_hand_video.mp4"
SAMPLE_RGBD = SAMPLES_DIR / "rgbd_tum"
