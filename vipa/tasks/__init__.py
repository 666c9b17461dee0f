"""The QA and motion task kinds, defined once: prompts, answer formats, strides (seconds) and
the builders of the records that the annotators and the workbench write (``derived/qa.jsonl``,
``derived/motion.jsonl``) and training reads.

Every kind is a ``TaskKind`` in ``REGISTRY`` with its stage ("stage1" Hand3D-visual QA, "stage2"
Hand3D-action motion), prompt (or templates file), answer format and builder:

* ``vipa.tasks.paper``: the paper's products, registered with ``trained=False`` (several
  images, both hands, templated wording): QA "spatial_relationship", "task_completion",
  "hand_movement", "camera_movement"; motion "instruction_to_motion", "motion_to_text",
  "contextual_prediction" (stride 0.2 s).
* ``vipa.tasks.trained``: what the single-frame model trains on (``TRAINED``), each a variant
  of a paper kind (``TaskKind.variant_of``): "spatial", "task" QA; "gen", "translate",
  "context" motion (the model config's stride, ``MOTION_STRIDE_S`` by default).

``build_records(ep, stage, params, kinds)`` builds the records of any kinds; adding a kind is
one ``register`` call plus its builder. Machinery in ``vipa.tasks.base``, template text in
``vipa.tasks.text``.

Records of the trained kinds are JSON-serialisable dicts, one per training sample, for the
episode's main hand (the hand with most frames that have a known wrist)::

    {"id", "type": kind, "episode_id", "hand", "frames": [t], "frame_of_reference": t,
     "question": prompt, "answer": text,
     "target": {"vector": [3], "point_a": [3], "point_b": [3] | None},   # QA kinds
     "waypoints": [[3] * n], "past_waypoints": [[3] * m], "stride_s": s}  # motion kinds

Every position is in the camera frame of frame ``t`` (OpenCV, metres); positions from other
frames are moved into it with ``EpisodeView.to_frame`` (the episode's ``camera_pose``,
world_from_camera), so a moving camera does not leak into hand motion. ``point_a`` is the
wrist at t, ``point_b`` the QA target point, ``vector`` = point_b - point_a. Waypoints are the
wrist every ``stride_s`` seconds after t (the future; held at the last known wrist near the
episode end) and before t (the past, oldest first). The paper kinds' records are described in
``vipa.tasks.paper``.
"""

from vipa.tasks.base import (
    DEFAULT_INSTRUCTION,
    FUTURE_WAYPOINTS,
    LEGACY_MOTION_STRIDE_S,
    MIN_TASK_DISTANCE,
    MOTION_STRIDE_S,
    PAST_WAYPOINTS,
    PRODUCTS,
    REGISTRY,
    STAGES,
    TRAINED,
    EpisodeView,
    TaskKind,
    TaskParams,
    build_records,
    check_record,
    corpus_texts,
    episode_view,
    is_task_record,
    is_trained,
    kind_order,
    main_hand,
    motion_record,
    motion_text,
    prompt,
    qa_record,
    register,
    sort_records,
    stride_frames,
    trained_kinds,
    trajectory_prompt,
    unregister,
    waypoints,
)
from vipa.tasks.paper import (
    PAPER_MOTION_STRIDE_S,
    PAPER_MOTION_TASKS,
    PAPER_QA_TYPES,
    PaperMotionConfig,
    PaperQAConfig,
)
from vipa.tasks import trained as _trained  # noqa: E402,F401  (registers the trained kinds)

__all__ = [
    "DEFAULT_INSTRUCTION", "FUTURE_WAYPOINTS", "LEGACY_MOTION_STRIDE_S", "MIN_TASK_DISTANCE", "MOTION_STRIDE_S",
    "PAST_WAYPOINTS", "PRODUCTS", "REGISTRY", "STAGES", "TRAINED", "EpisodeView", "TaskKind", "TaskParams",
    "build_records", "check_record", "corpus_texts", "episode_view", "is_task_record", "is_trained", "kind_order",
    "main_hand", "motion_record", "motion_text", "prompt", "qa_record", "register", "sort_records", "stride_frames",
    "trained_kinds", "trajectory_prompt", "unregister", "waypoints", "PAPER_MOTION_STRIDE_S", "PAPER_MOTION_TASKS",
    "PAPER_QA_TYPES", "PaperMotionConfig", "PaperQAConfig",
]
