"""Simulated robot environments for post-training data and evaluation (optional extra `sim`)."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # must be set before mujoco is first imported
