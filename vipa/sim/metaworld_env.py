"""Meta-World adapter: seeded tasks, offscreen RGB + metric depth with intrinsics and camera pose,
proprioception, scripted experts.

Observations follow vipa.conventions: depth in metres along the optical axis, K for the
rendered image, ``camera_pose`` world_from_camera in the OpenCV camera frame (x right, y down,
z forward). Images are rotated so that world-up points up in the image (Meta-World's corner
cameras are rolled 180 degrees); K and the pose are rotated with them, so geometry stays exact.
The policy sees only the image, depth, K and the robot state (end-effector xyz in metres in the
world frame + gripper opening), never object or goal coordinates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

TASK_INSTRUCTIONS: dict[str, str] = {
    "reach-v3": "reach the red goal point",
    "push-v3": "push the puck to the goal",
    "button-press-topdown-v3": "press the button from the top",
    "drawer-open-v3": "open the drawer",
    "drawer-close-v3": "close the drawer",
    "door-open-v3": "open the door",
    "window-open-v3": "slide the window open",
    "pick-place-v3": "pick up the puck and place it at the goal",
}
# The "workspace" camera: Meta-World's own cameras spend most pixels on the background and the arm,
# so at 64 px the reach goal and the puck are 1-2 pixels. This one frames the table region all four
# default tasks use (x in [-0.3, 0.3], y in [0.4, 1.0], z in [0, 0.35] m) from the robot's right-front,
# looking down 40 degrees. It replaces the pose of the "corner" camera slot in the compiled model.
WORKSPACE_CAMERA = {"lookat": (0.0, 0.70, 0.10), "distance": 0.95, "azimuth_deg": -35.0,
                    "elevation_deg": 42.0, "fovy_deg": 45.0}
STATE_DIM = 4  # end-effector x, y, z (m, world frame) + gripper opening
ACTION_DIM = 4  # Meta-World: end-effector delta x, y, z + gripper, each in [-1, 1]


@dataclass
class SimObservation:
    """One observation: rgb (H, W, 3) uint8, depth (H, W) float32 m, K (3, 3), camera_pose (4, 4)
    world_from_camera, state (4,) float32, instruction."""

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    camera_pose: np.ndarray
    state: np.ndarray
    instruction: str


def _look_at_quat(lookat, distance, azimuth_deg, elevation_deg) -> tuple[np.ndarray, np.ndarray]:
    """Position and MuJoCo quaternion (w, x, y, z) of a camera looking at ``lookat`` from ``distance`` m
    (azimuth from world +x towards +y around the target; elevation above the table plane)."""
    import mujoco

    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    back = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    pos = np.asarray(lookat, np.float64) + distance * back
    x = np.cross([0.0, 0.0, 1.0], back)  # MuJoCo cameras look along their -z axis (= -back), y up
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(back, x), back], 1)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, R.reshape(-1))
    return pos, quat


def _policy_class_name(task: str) -> str:
    base = task.removesuffix("-v3")
    return "Sawyer" + "".join(p.capitalize() for p in base.split("-")) + "V3Policy"


class MetaWorldEnv:
    """One Meta-World task with offscreen rendering. ``reset(seed)`` draws a seeded task variation."""

    def __init__(self, task: str, camera: str = "workspace", width: int = 96, height: int = 96,
                 max_steps: int = 200, render: bool = True):
        try:
            import mujoco
            import metaworld.policies as policies
            from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE as envs
        except ModuleNotFoundError as exc:
            raise RuntimeError("Meta-World is not installed: pip install -e '.[sim]'") from exc
        key = f"{task}-goal-observable"
        if key not in envs:
            known = sorted(k.removesuffix("-goal-observable") for k in envs)
            raise ValueError(f"unknown Meta-World task {task!r}; known: {', '.join(known)}")
        self.task, self.camera, self.width, self.height = task, camera, width, height
        self.max_steps = max_steps
        self.instruction = TASK_INSTRUCTIONS.get(task, task.removesuffix("-v3").replace("-", " "))
        self._mujoco = mujoco
        self._env_cls = envs[key]
        self._env = self._env_cls(seed=0)
        self._policy = getattr(policies, _policy_class_name(task))()
        self._renderer = None
        if render:
            self._renderer = self._make_renderer()
        self._render_camera = "corner" if camera == "workspace" else camera
        cam_id = mujoco.mj_name2id(self._env.model, mujoco.mjtObj.mjOBJ_CAMERA, self._render_camera)
        if cam_id < 0:
            raise ValueError(f"unknown camera {camera!r} in {task}")
        self._cam_id = cam_id
        self._place_camera()
        self._raw_obs: np.ndarray | None = None
        self.steps = 0

    def _make_renderer(self):
        """An offscreen renderer sized to the image, with shadows, reflections, skybox, fog and haze off."""
        mj = self._mujoco
        r = mj.Renderer(self._env.model, self.height, self.width)
        for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX", "mjRND_FOG", "mjRND_HAZE"):
            r.scene.flags[getattr(mj.mjtRndFlag, flag)] = 0
        return r

    def _place_camera(self) -> None:
        if self.camera != "workspace":
            return
        m, c = self._env.model, self._cam_id
        w = WORKSPACE_CAMERA
        m.cam_pos[c], m.cam_quat[c] = _look_at_quat(w["lookat"], w["distance"], w["azimuth_deg"], w["elevation_deg"])
        m.cam_fovy[c] = w["fovy_deg"]
        self._mujoco.mj_forward(m, self._env.data)

    def _camera(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """K, world_from_camera (OpenCV axes) and whether the image must be rotated 180 degrees."""
        m, d, c = self._env.model, self._env.data, self._cam_id
        fovy = np.deg2rad(float(m.cam_fovy[c]))
        f = 0.5 * self.height / np.tan(0.5 * fovy)
        K = np.array([[f, 0, self.width / 2], [0, f, self.height / 2], [0, 0, 1]], np.float32)
        R = d.cam_xmat[c].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])  # MuJoCo (y up, -z fwd) -> OpenCV
        rotate = R[2, 1] > 0  # image "down" axis points to world up: camera rolled upside down
        if rotate:
            R = R @ np.diag([-1.0, -1.0, 1.0])
        T = np.eye(4, dtype=np.float32)
        T[:3, :3], T[:3, 3] = R, d.cam_xpos[c]
        return K, T, rotate

    def _observe(self) -> SimObservation:
        state = np.concatenate([self._raw_obs[:3], self._raw_obs[3:4]]).astype(np.float32)
        K, T, rotate = self._camera()
        if self._renderer is None:
            rgb = np.zeros((self.height, self.width, 3), np.uint8)
            depth = np.full((self.height, self.width), np.nan, np.float32)
        else:
            r = self._renderer
            r.update_scene(self._env.data, camera=self._render_camera)
            rgb = r.render().copy()
            r.enable_depth_rendering()
            r.update_scene(self._env.data, camera=self._render_camera)
            depth = r.render().astype(np.float32)
            r.disable_depth_rendering()
            if rotate:
                rgb, depth = rgb[::-1, ::-1].copy(), depth[::-1, ::-1].copy()
            depth[depth > 10.0] = np.nan  # background / far plane: no surface
        return SimObservation(rgb, depth, K, T, state, self.instruction)

    def reset(self, seed: int) -> SimObservation:
        """Seeded reset: the same seed gives the same object and goal positions."""
        self._env.close()
        self._env = self._env_cls(seed=seed)
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = self._make_renderer()
        self._place_camera()
        self._raw_obs, _ = self._env.reset(seed=seed)
        self._env.max_path_length = max(self.max_steps + 1, 500)
        self.steps = 0
        return self._observe()

    def step(self, action: np.ndarray) -> tuple[SimObservation, bool, bool]:
        """Apply one action (4,) in [-1, 1]; returns (observation, success, done)."""
        action = np.clip(np.asarray(action, np.float32).reshape(ACTION_DIM), -1.0, 1.0)
        self._raw_obs, _, _, _, info = self._env.step(action)
        self.steps += 1
        success = bool(info.get("success", 0.0))
        return self._observe(), success, success or self.steps >= self.max_steps

    def expert_action(self) -> np.ndarray:
        """The scripted expert's action for the current state (uses privileged state; data only)."""
        return np.clip(self._policy.get_action(self._raw_obs), -1.0, 1.0).astype(np.float32)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._env.close()

    def __enter__(self) -> "MetaWorldEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
