"""The training tasks defined once (vipa.tasks): the records the annotators and the workbench
write are the samples training reads, a correction reaches the training sample, a new QA kind
needs only its registration, and the stride in seconds travels with the model config."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from vipa import tasks
from vipa.conventions import WRIST
from vipa.data.qa import encode_direction_distance
from vipa.model.config import ModelConfig, get_config
from vipa.train.data import build_tokenizer, task_params
from vipa.train.datasets import Hand3DTorchDataset, cache_episode, cache_from_dataset, episode_records

SIZE, FRAMES = 48, 16


@pytest.fixture(autouse=True)
def _frame_cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("VIPA_CACHE_DIR", str(tmp_path / "frame_cache"))


@pytest.fixture(scope="module")
def cfg():
    return get_config("tiny", image_size=32, patch_size=8, fine_stride=4)  # default stride and horizons


def _episode(seed: int = 101):
    from annotators.synthetic import generate_episode

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = generate_episode(seed, width=SIZE, height=SIZE, num_frames=FRAMES)
    ep.episode_id = f"syn_{seed}"
    return ep


def _dataset(tmp_path: Path, seed: int = 101):
    from vipa.data.dataset import Hand3DDataset

    ds = Hand3DDataset.create(tmp_path / "ds", fps=15.0)
    ds.write_episode(_episode(seed))
    return ds


def _samples(ds, cfg, tok, stage):
    caches = cache_from_dataset(ds, ds.episode_ids(), cfg.model.image_size, params=task_params(cfg.model))
    data = Hand3DTorchDataset(caches, tok, cfg.model, stage)
    return {(s.kind, s.frame, s.prompt.split(" relative")[0]): s for s in data.samples}, data


def test_corrected_joint_changes_the_training_sample(tmp_path: Path, cfg) -> None:
    """Workbench path: correct the wrist's depth in the correction layer, re-derive the records,
    and the QA answer, its numeric target and the motion waypoints the model trains on follow."""
    from app.workbench import Workbench

    ds = _dataset(tmp_path)
    eid = ds.episode_ids()[0]
    wb = Workbench(ds.root, author="tester")
    wb.rederive(eid)  # the annotators' records, as after `vipa annotate`
    recs, derived = episode_records(wb.ds, eid, task_params(cfg.model))
    assert derived == [] and {r["type"] for r in recs} >= {"spatial", "task", "gen"}  # read, not derived here
    tok = build_tokenizer(cache_from_dataset(wb.ds, [eid], cfg.model.image_size, params=task_params(cfg.model)), cfg)
    before, _ = _samples(wb.ds, cfg, tok, "stage1")
    motion_before, _ = _samples(wb.ds, cfg, tok, "stage2")
    side = tasks.main_hand(wb.ds.load_episode(eid))
    step = tasks.stride_frames(15.0, cfg.model.motion_stride_s)
    gens = {k[1]: k for k in motion_before if k[0] == "gen"}
    key = next(k for k in sorted(before, key=lambda k: k[1]) if k[0] == "spatial" and k[1] - step in gens)
    t, gen_key = key[1], gens[key[1] - step]

    wb.ds.corrections.nudge_joint_depth(eid, t, side, WRIST, 0.15, "tester")
    wb.rederive(eid)

    after, _ = _samples(wb.ds, cfg, tok, "stage1")
    s0, s1 = before[key], after[key]
    new_wrist = wb.ds.load_episode(eid).hands[side].joints_3d[t, WRIST]
    np.testing.assert_allclose(s1.point_a, new_wrist, atol=1e-6)
    assert np.linalg.norm(s1.point_a - s0.point_a) == pytest.approx(0.15 * np.linalg.norm(s0.point_a) / s0.point_a[2],
                                                                    rel=1e-3)
    np.testing.assert_allclose(s1.point_b, s0.point_b, atol=1e-6)  # the object did not move
    assert s1.target == encode_direction_distance(s1.point_b - s1.point_a) != s0.target
    # the record on disk is what the sample came from
    rec = next(r for r in wb.ds.read_derived(eid, "qa") if r["type"] == "spatial" and r["frames"] == [t]
               and r["question"] == s1.prompt)
    assert rec["answer"] == s1.target and rec["target"]["point_a"] == pytest.approx(s1.point_a.tolist())
    # the motion sample one stride earlier has the corrected wrist as its first waypoint
    motion_after, _ = _samples(wb.ds, cfg, tok, "stage2")
    m0, m1 = motion_before[gen_key], motion_after.get(gen_key)
    assert m1 is not None and m1.target != m0.target
    moved = np.linalg.norm(m1.traj - m0.traj, axis=1)
    assert moved[0] == pytest.approx(np.linalg.norm(s1.point_a - s0.point_a), rel=1e-3)
    assert np.allclose(moved[1:], 0.0, atol=1e-6)
    assert m1.target == tasks.motion_text(m1.traj)


def test_old_dataset_without_records_derives_the_same_samples(tmp_path: Path, cfg) -> None:
    """An episode without derived records gets them in memory from the same functions."""
    from annotators.motion import motion_samples
    from annotators.qa import generate_qa

    ds = _dataset(tmp_path)
    eid = ds.episode_ids()[0]
    p = task_params(cfg.model)
    recs, derived = episode_records(ds, eid, p)
    assert derived == ["stage1", "stage2"]
    ep = ds.load_episode(eid)
    ds.write_derived(eid, "qa", generate_qa(ep))
    ds.write_derived(eid, "motion", motion_samples(ep))
    written, derived = episode_records(ds, eid, p)
    assert derived == [] and written == json.loads(json.dumps(recs))
    # a model with another horizon gets its motion records derived in memory, the QA ones read
    other = tasks.TaskParams(n_future=3, n_past=2)
    again, derived = episode_records(ds, eid, other)
    assert derived == ["stage2"] and [r for r in again if r["type"] == "task"] == [r for r in written if r["type"] == "task"]
    assert all(len(r["waypoints"]) == 3 for r in again if r["type"] == "gen")


def test_records_are_in_the_frame_of_their_reference_camera() -> None:
    """Moving camera: waypoints are the wrist moved into camera t's frame (not raw per-frame values)."""
    from vipa.geometry import invert_transform, transform_points

    ep = next(e for e in (_episode(s) for s in range(100, 140)) if not tasks.episode_view(e).static_camera)
    v = tasks.episode_view(ep)
    rec = next(r for r in tasks.build_records(ep, "stage2") if r["type"] == "gen")
    t = rec["frames"][0]
    k = t + tasks.stride_frames(ep.fps, tasks.MOTION_STRIDE_S)
    world = transform_points(ep.camera_pose[k].astype(np.float64), v.wrist[k].astype(np.float64)[None])
    expect = transform_points(invert_transform(ep.camera_pose[t].astype(np.float64)), world)[0]
    np.testing.assert_allclose(rec["waypoints"][0], expect, atol=1e-5)
    assert rec["answer"] == tasks.motion_text(np.asarray(rec["waypoints"]))


def test_new_qa_kind_needs_only_its_registration(cfg) -> None:
    """A hypothetical QA kind: one ``register`` call with its builder (one file: vipa/tasks.py, or
    any module that registers) and it is in the records, the training samples and the corpus."""

    def build_height(v: tasks.EpisodeView, p: tasks.TaskParams) -> list[dict]:
        return [tasks.qa_record(v, "height", int(t), v.wrist[t] + np.float32([0, -0.1, 0])) for t in v.frames]

    ep = _episode()
    tasks.register(tasks.TaskKind("height", "stage1", "Where is the point above the {hand} wrist?",
                                  "direction_distance", build_height))
    try:
        assert "height" in tasks.trained_kinds("stage1")
        caches = [cache_episode(ep, cfg.model.image_size, params=task_params(cfg.model))]
        tok = build_tokenizer(caches, cfg)
        data = Hand3DTorchDataset(caches, tok, cfg.model, "stage1")
        height = [s for s in data.samples if s.kind == "height"]
        assert height and all(s.target == "up, 0.10m" for s in height)
        assert data.summary["by_kind"]["height"] == len(height)
        assert "Where is the point above the right wrist?" in tasks.corpus_texts("x", [])
    finally:
        tasks.unregister("height")
    assert "height" not in tasks.trained_kinds("stage1") and "height" not in tasks.REGISTRY


def test_prompts_are_the_trained_wording() -> None:
    """The checkpoint's prompts (checkpoints/tiny_sample was trained with these)."""
    assert tasks.prompt("spatial", hand="right", object="red cube") == "Where is the red cube relative to the right hand?"
    assert tasks.prompt("task", hand="left", instruction="stack it") == "How should the left hand move to stack it?"
    assert tasks.trajectory_prompt("stack it.", "left") == "Predict the left wrist motion to stack it."
    assert tasks.trajectory_prompt("Past motion: <mx_0001>. Predict the next motion.") == \
        "Past motion: <mx_0001>. Predict the next motion."
    assert tasks.prompt("translate", motion="<mx_0001>") == "Describe this motion: <mx_0001>"
    with pytest.raises(ValueError, match="hand"):
        tasks.trajectory_prompt("stack it", "middle")


def test_stride_in_seconds_is_in_the_config_with_a_legacy_default() -> None:
    d = ModelConfig().to_dict()
    assert d["motion_stride_s"] == pytest.approx(2 / 15)
    d.pop("motion_stride_s")
    assert ModelConfig.from_dict(d).motion_stride_s == tasks.LEGACY_MOTION_STRIDE_S
    assert tasks.stride_frames(15.0, tasks.LEGACY_MOTION_STRIDE_S) == 2
    with pytest.raises(ValueError, match="motion_stride_s"):
        ModelConfig(motion_stride_s=0.0).validate()
    root = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny_sample" / "config.json"
    if root.is_file():  # trained with the legacy stride (recorded since it gained the RGB point head)
        stride = json.loads(root.read_text())["config"]["model"].get("motion_stride_s", tasks.LEGACY_MOTION_STRIDE_S)
        assert stride == pytest.approx(tasks.LEGACY_MOTION_STRIDE_S)


def test_every_kind_is_one_registered_task_kind() -> None:
    """The paper's kinds and the trained ones live in one registry; the trained ones are variants
    of paper kinds of the same stage, and each motion kind has its stride in seconds."""
    assert set(tasks.PAPER_QA_TYPES) | set(tasks.PAPER_MOTION_TASKS) | {"spatial", "task", "gen", "translate",
                                                                       "context"} == set(tasks.REGISTRY)
    for name, kind in tasks.REGISTRY.items():
        assert kind.doc and kind.prompts() and kind.product == ("qa" if kind.stage == "stage1" else "motion")
        if name in tasks.PAPER_QA_TYPES + tasks.PAPER_MOTION_TASKS:
            assert not tasks.is_trained(name) and kind.variant_of is None
        else:
            assert tasks.is_trained(name) and tasks.REGISTRY[kind.variant_of].stage == kind.stage
    assert {tasks.REGISTRY[k].stride_s for k in tasks.PAPER_MOTION_TASKS} == {tasks.PAPER_MOTION_STRIDE_S}
    assert {tasks.REGISTRY[k].stride_s for k in tasks.trained_kinds("stage2")} == {tasks.MOTION_STRIDE_S}
    assert tasks.prompt("hand_movement", hand="left").startswith("How did the left hand move")
    with pytest.raises(ValueError, match="not registered"):
        tasks.register(tasks.TaskKind("x", "stage1", "?", "direction_distance", lambda v, p: [], variant_of="nope"))
    with pytest.raises(ValueError, match="unknown"):
        tasks.build_records(_episode(), kinds=["nope"])


def test_paper_and_trained_kinds_share_the_camera_frame_transform() -> None:
    """task_completion with the episode end as its goal and the trained "task" kind ask the same
    vector at the same frame (moving camera: both go through EpisodeView.to_frame)."""
    ep = next(e for e in (_episode(s) for s in range(100, 140)) if not tasks.episode_view(e).static_camera)
    params = tasks.TaskParams(qa=tasks.PaperQAConfig(task_goal="end", per_type=len(ep.hands["right"].present)))
    recs = tasks.build_records(ep, "stage1", params, ["task_completion", "task"])
    side = tasks.main_hand(ep)
    known = np.flatnonzero(np.isfinite(tasks.episode_view(ep).wrist).all(1))
    paper = {r["frames"][0]: r for r in recs if r["type"] == "task_completion" and r["hand"] == side
             and r["target"]["goal_frame"] == known[-1]}
    trained = {r["frames"][0]: r for r in recs if r["type"] == "task"}
    both = sorted(set(paper) & set(trained))
    assert len(both) >= 3
    for t in both:
        np.testing.assert_allclose(paper[t]["target"]["vector"], trained[t]["target"]["vector"], atol=1e-6)
    n_paper = sum(r["type"] == "task_completion" for r in recs)  # paper records first, then the trained
    assert [r["id"].split(":")[1] for r in recs] == ["qa"] * n_paper + ["stage1"] * (len(recs) - n_paper)
    assert [tasks.is_task_record(r) for r in recs] == [False] * n_paper + [True] * (len(recs) - n_paper)
