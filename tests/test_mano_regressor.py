"""MANO-regressor backend (issue 14): random-weight ViT + MANO head, a synthetic MANO-like skinning layer.

The synthetic MANO layer is built in the test from the synthetic generator's hand (``annotators.hand_model``),
so the pose of its template is known in the MediaPipe order: the backend's conversion to the project's joint
order, handedness and camera frame are checked against it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from annotators import mano_regressor as M  # noqa: E402
from annotators.errors import BackendError  # noqa: E402
from annotators.hand_model import HandShape, hand_rotation, local_joints, place  # noqa: E402
from vipa import geometry as G  # noqa: E402
from vipa.conventions import JOINT_INDEX, convert_joints  # noqa: E402

MANO_PARENTS = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
# Template pose in MANO's frame: fingers up the image (-y), palm facing the camera (-z).
R_TEMPLATE = hand_rotation(np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, -1.0]))


def known_hand(side: str = "right") -> np.ndarray:
    """(21, 3) MediaPipe-order joints of the template hand (m), wrist at the origin."""
    return place(local_joints(0.0, HandShape(1.0, side)), np.zeros(3, np.float32), R_TEMPLATE).astype(np.float64)


def synthetic_mano(seed: int = 0) -> dict[str, np.ndarray]:
    """MANO-shaped arrays: vertices 0-15 are the joints, the tip vertices the fingertips, the rest scattered
    around the bones; each vertex skinned to one joint; beta 0 scales the hand about the wrist (10 % per unit)."""
    rng = np.random.default_rng(seed)
    j_mano = convert_joints(known_hand("right"), "mediapipe", "mano")  # 16 joints + 5 tips
    V = 778
    v = np.zeros((V, 3))
    owner = np.zeros(V, int)
    v[:16], owner[:16] = j_mano[:16], np.arange(16)
    tips_parent = [15, 3, 6, 12, 9]  # MANO order: thumb, index, middle, ring, pinky tips hang from these joints
    for k, vid in enumerate(M.MANO_TIP_VERTICES):
        v[vid], owner[vid] = j_mano[16 + k], tips_parent[k]
    free = [i for i in range(16, V) if i not in M.MANO_TIP_VERTICES]
    owner[free] = rng.integers(0, 16, len(free))
    v[free] = j_mano[owner[free]] + rng.normal(0, 0.005, (len(free), 3))
    J_reg = np.zeros((16, V))
    J_reg[np.arange(16), np.arange(16)] = 1.0
    weights = np.zeros((V, 16))
    weights[np.arange(V), owner] = 1.0
    shapedirs = np.zeros((V, 3, 10))
    shapedirs[:, :, 0] = 0.1 * (v - v[0])
    kin = np.array([[2**32 - 1] + MANO_PARENTS[1:], list(range(16))], np.int64)
    return {"v_template": v, "shapedirs": shapedirs, "posedirs": np.zeros((V, 3, 135)), "J_regressor": J_reg,
            "weights": weights, "kintree_table": kin}


def fixed_output_model(cam=(0.8, 0.01, -0.02), beta0: float = 0.0):
    """Tiny random-weight regressor whose head is set to give the zero pose, betas (beta0, 0...) and ``cam``."""
    model = M.build_regressor("tiny", seed=0)
    head = model.mano_head
    with torch.no_grad():
        for lin in (head.decpose, head.decshape, head.deccam):
            lin.weight.zero_()
            lin.bias.zero_()
        head.deccam.bias.copy_(torch.tensor(cam, dtype=torch.float32) - head.init_cam)
        head.decshape.bias[0] = beta0
    return model


def _chirality(j: np.ndarray) -> float:
    """Sign of the triple product (index MCP - wrist, pinky MCP - wrist, middle tip - wrist): flips with the side."""
    w = j[JOINT_INDEX["wrist"]]
    return float(np.sign(np.linalg.det(np.stack([j[JOINT_INDEX["index_mcp"]] - w, j[JOINT_INDEX["pinky_mcp"]] - w,
                                                 j[JOINT_INDEX["middle_tip"]] - w]))))


K = G.fov_intrinsics(640, 480, 60.0)


def test_mano_layer_rest_pose_and_shape():
    layer = M.build_mano_layer(synthetic_mano())
    eye = torch.eye(3).expand(1, 16, 3, 3)
    joints, verts = layer(eye[:, :1], eye[:, 1:], torch.zeros(1, 10))
    j = joints[0].numpy()
    np.testing.assert_allclose(convert_joints(j, "mano", "mediapipe"), known_hand(), atol=1e-5)
    betas = torch.zeros(1, 10)
    betas[0, 0] = 2.0  # 20 % larger about the wrist
    j2 = layer(eye[:, :1], eye[:, 1:], betas)[0][0].numpy()
    np.testing.assert_allclose(j2 - j2[0], 1.2 * (j - j[0]), atol=1e-5)
    # a 90 deg rotation of the index MCP moves its children only
    pose = eye[:, 1:].clone()
    pose[0, 0] = torch.as_tensor(G.axis_angle_to_matrix(np.array([0.0, 0.0, np.pi / 2])), dtype=torch.float32)
    j3 = layer(eye[:, :1], pose, torch.zeros(1, 10))[0][0].numpy()
    np.testing.assert_allclose(j3[[0, 1, 4, 7]], j[[0, 1, 4, 7]], atol=1e-6)
    assert np.linalg.norm(j3[2] - j[2]) > 0.01
    assert abs(np.linalg.norm(j3[2] - j3[1]) - np.linalg.norm(j[2] - j[1])) < 1e-6  # bone length kept


@pytest.mark.parametrize("side", ["right", "left"])
def test_known_pose_order_handedness_frame(side):
    cam = (0.8, 0.01, -0.02)
    box = (300.0, 180.0, 380.0, 260.0)
    be = M.ManoRegressorHands(model=fixed_output_model(cam), mano_layer=M.build_mano_layer(synthetic_mano()),
                              config="tiny", boxes=lambda f: [(side, box, 0.9)], K=K)
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    (det,) = be.detect(frame)
    jc = be.last_joints_cam[0].astype(np.float64)
    u, v, b = M.crop_box(box, be.rescale)
    # frame: the weak-perspective camera becomes a translation whose projection is the box centre
    tx = cam[1] if side == "right" else -cam[1]
    t = M.camera_translation((cam[0], tx, cam[2]), u, v, b, K)
    assert t[2] == pytest.approx(2.0 * K[0, 0] / (b * cam[0]))
    expected = known_hand(side="right")
    if side == "left":
        expected[:, 0] *= -1.0  # the left hand is the mirror image in the camera's x
    np.testing.assert_allclose(jc, expected + t, atol=1e-4)  # MediaPipe order, camera frame, metres
    # the MANO origin projects to the box centre shifted by the crop camera's (tx, ty) * b * s / 2 (pixels)
    np.testing.assert_allclose(G.project(t.astype(np.float32), K),
                               [u + tx * b * cam[0] / 2.0, v + cam[2] * b * cam[0] / 2.0], atol=1e-2)
    # order: thumb tip and pinky tip where the known hand has them; fingertips above the wrist (y down)
    assert det.side == side
    assert jc[JOINT_INDEX["middle_tip"], 1] < jc[JOINT_INDEX["wrist"], 1]
    # handedness: chirality matches the known hand of that side (placed with the same rotation)
    ref = place(local_joints(0.0, HandShape(1.0, side)), np.zeros(3, np.float32), R_TEMPLATE)
    if side == "left":
        ref = known_hand("right") * np.array([-1.0, 1.0, 1.0])
    assert _chirality(jc) == _chirality(ref) == (_chirality(known_hand("right")) * (1 if side == "right" else -1))
    # outputs: 2D is the projection of the camera-frame joints; world = joints minus their centroid
    np.testing.assert_allclose(det.landmarks_2d, G.project(jc.astype(np.float32), K), atol=1e-3)
    np.testing.assert_allclose(det.world_landmarks, jc - jc.mean(0), atol=1e-5)
    assert det.in_frame.all() and det.confidence.max() == pytest.approx(0.9)


def test_betas_give_the_persons_size():
    be = M.ManoRegressorHands(model=fixed_output_model(beta0=-2.5), mano_layer=M.build_mano_layer(synthetic_mano()),
                              config="tiny", boxes=lambda f: [("right", (300, 180, 380, 260), 1.0)], K=K)
    (det,) = be.detect(np.zeros((480, 640, 3), np.uint8))
    w = det.world_landmarks
    ref = known_hand()
    ratio = np.linalg.norm(w[12] - w[0]) / np.linalg.norm(ref[12] - ref[0])
    assert ratio == pytest.approx(0.75, abs=1e-4)  # a child's hand: 0.75x


def test_checkpoint_and_mano_files(tmp_path):
    model = M.build_regressor("tiny", seed=3)
    ck = tmp_path / "hamer_tiny.ckpt"
    torch.save({"state_dict": {**model.state_dict(), "discriminator.w": torch.zeros(2)}}, ck)
    np.savez(tmp_path / "MANO_RIGHT.npz", **synthetic_mano())
    boxes = lambda f: [("right", (200, 150, 290, 240), 0.8), ("left", (400, 150, 480, 230), 0.7)]  # noqa: E731
    a = M.ManoRegressorHands(checkpoint=str(ck), mano=str(tmp_path), config="tiny", boxes=boxes, K=K)
    b = M.ManoRegressorHands(model=model, mano_layer=M.build_mano_layer(synthetic_mano()), config="tiny", boxes=boxes, K=K)
    frame = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    da, db = a.detect(frame), b.detect(frame)
    assert [d.side for d in da] == ["right", "left"]
    for x, y in zip(da, db):
        np.testing.assert_allclose(x.landmarks_2d, y.landmarks_2d, atol=1e-4)
    assert a.describe()["name"] == "mano_regressor"
    # a checkpoint for another architecture, a pickle, missing files: one clear error each
    torch.save(M.build_regressor(M.ManoRegressorConfig("other", image_size=64, crop_width=48, embed_dim=48, depth=1,
                                                       num_heads=2, head_dim=32, head_depth=1, head_heads=2)).state_dict(),
               tmp_path / "other.pt")
    with pytest.raises(BackendError, match="other.pt: does not fit config 'tiny'"):
        M.ManoRegressorHands(checkpoint=str(tmp_path / "other.pt"), mano=str(tmp_path), config="tiny")
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(b"\x80\x04.")
    with pytest.raises(BackendError, match="never loaded"):
        M.load_mano(tmp_path / "MANO_RIGHT.pkl")
    with pytest.raises(BackendError, match="checkpoint not found"):
        M.ManoRegressorHands(checkpoint=str(tmp_path / "none.ckpt"), mano=str(tmp_path), config="tiny")
    with pytest.raises(BackendError, match="MANO model file not found"):
        M.load_mano(tmp_path / "nowhere")


def test_end_to_end_through_the_pipeline(tmp_path):
    """Random weights, frames on disk -> the annotation pipeline with this backend -> lifted 3D joints."""
    import cv2

    from annotators.hands import create_hand_backend
    from annotators.pipeline import AnnotateConfig, run_pipeline

    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(folder / f"{i:04d}.png"), rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    be = create_hand_backend("annotators.mano_regressor:ManoRegressorHands", model=M.build_regressor("tiny", seed=1),
                             mano_layer=M.build_mano_layer(synthetic_mano()), config="tiny",
                             boxes=lambda f: [("left", (100, 80, 160, 140), 0.9)])
    cfg = AnnotateConfig(depth={"backend": "none"}, objects={"backends": ()}, qa={"enabled": False},
                         motion={"enabled": False}, lift={"max_reproj_px": None})
    ann = run_pipeline(folder, cfg, hand_backend=be)
    tr = ann.episode.hands["left"]
    assert tr.present.all() and not ann.episode.hands["right"].present.any()
    assert np.isfinite(tr.joints_3d).all() and (tr.joints_3d[..., 2] > 0).all()
    assert ann.episode.extra["hands_backend"]["name"] == "mano_regressor"
    assert ann.episode.extra["hand_scale"]["left"]["source"] == "prior"
    # the lift keeps the regressor's shape (no depth restoration): bone lengths preserved
    from annotators.lift import bone_lengths

    w = be.regress(cv2.imread(str(folder / "0000.png"))[..., ::-1].copy(), [("left", (100, 80, 160, 140), 0.9)])
    ref = bone_lengths(convert_joints(w[0]["joints_cam"], "mano", "mediapipe"))
    np.testing.assert_allclose(bone_lengths(tr.joints_3d[0]), ref, rtol=0.02, atol=1e-4)


def test_registered_for_vipa_annotate(tmp_path):
    """``--hands mano_regressor --hands-opt checkpoint=... --hands-opt mano=...`` builds the backend."""
    from annotators import registry

    be = registry.get_backend("hands", "mano_regressor")
    assert {"checkpoint", "mano", "config"} <= set(be.defaults())
    with pytest.raises(BackendError, match="needs checkpoint"):
        be.build({})
    model = M.build_regressor("tiny", seed=3)
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    np.savez(tmp_path / "MANO_RIGHT.npz", **synthetic_mano())
    hands = be.build({"checkpoint": str(tmp_path / "tiny.pt"), "mano": str(tmp_path), "config": "tiny"})
    assert isinstance(hands, M.ManoRegressorHands) and hands.describe()["config"] == "tiny"
