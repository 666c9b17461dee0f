"""What every named Gradio endpoint of the workbench does, with the units of its numbers: shown in
the app's "Use via API" page and by ``gradio_client``'s ``view_api()``.

Conventions used below: ``frame`` is a 0-based frame index of the episode; pixels (u, v) are in
the episode's stored image, origin at the top-left pixel's corner, u to the right; 3D positions
are in the camera frame (OpenCV: x right, y down, z forward) in metres; ``side`` is the person's
anatomical hand, "left" or "right"; ``joint`` a MediaPipe joint name (e.g. "index_tip").
Edits return a one-line message saying what changed (or why nothing did).

``app.ui`` looks each endpoint up here with :func:`describe`: an endpoint without an entry stops
the app from building (and fails ``tests/test_api_endpoints.py``).
"""

from __future__ import annotations

API_DESCRIPTIONS: dict[str, str] = {
    # JSON endpoints (gr.api)
    "episodes": "List episodes as rows: episode id, frames (count), review status, the quality figures (each "
                "named with its unit: px for reprojection errors, m for distances, fractions 0-1 for rates), "
                "instruction, source. query: text to match ('' = all); review: 'all' or one review status.",
    "episode_info": "One episode's facts: episode_id, num_frames, width and height (px), fps (frames/s), "
                    "instruction, review_status, scale (median point-cloud scale, unitless), bad_frames (frame "
                    "indices), frame_review, objects, hands_present, quality figures, edits (count).",
    "joint": "One joint in one frame (corrected values): uv (px), xyz (m, camera frame), valid (visible), "
             "confidence (0-1), frame_valid (not marked bad), frame_review; {} when the hand is absent there.",
    "move_joint": "Move a joint to pixel (u, v) (px, stored image) in one frame; its 3D position keeps its depth "
                  "(m) and is re-projected through K.",
    "set_visibility": "Mark a joint visible (true) or hidden (false) in one frame.",
    "nudge_depth": "Move a joint along its camera ray by dz metres (positive: away from the camera; |dz| <= 1 m).",
    "set_scale": "Set the episode's point-cloud scale s (unitless factor, > 0): metric depth = s x stored depth.",
    "set_box": "Set an object's 2D box in one frame: x0, y0, x1, y1 in pixels of the stored image.",
    "mark_bad": "Mark one frame bad (true) or good again (false); bad frames are invalid in the effective "
                "annotation (frame_valid false).",
    "interpolate": "Replace a joint's 3D positions (m) strictly between frames start and end by linear "
                   "interpolation of the two keyframes ('all' or '' for joint: the whole hand).",
    "undo": "Undo the episode's last active edit.",
    "redo": "Redo the episode's last undone edit.",
    "set_review": "Set the episode's review status (one of the review statuses, e.g. 'approved', 'needs-fix').",
    "set_frame_review": "Set one frame's review status.",
    "set_instruction": "Replace the episode's language instruction (text).",
    "history": "The episode's edit log, oldest first: id, time (UTC, ISO 8601), author, what, frame, old and new "
               "value (in the field's unit: px, m or unitless), undone.",
    "export": "Export the corrected dataset (base + edits) to a new folder of that name inside '<dataset>_exports/'; "
              "returns the folder.",
    "worst_frames": "The k frames (default 10) with the largest reprojection error: frame, reproj_px (px), "
                    "calib_residual (unitless, relative depth), lift_depth_ratio, and who made the values.",
    "set_hand_scale": "Set one hand's size for the episode, as a factor of the mean hand (unitless, ~0.7-1.3); its "
                      "3D joints (m) are rescaled about the camera centre.",
    "predict": "Run the loaded checkpoint on an episode frame and instruction ('' = the episode's): predicted wrist "
               "waypoints (m, camera frame) drawn beside the demonstrated ones; returns message, error_m (mean "
               "distance in m to the demonstrated waypoints), recording_id and frame.",
    "recording": "The corrected episode as a Rerun recording: a downloadable .rrd file (open with `rerun FILE`; "
                 "the episode's H.264 video, 16-bit depth PNGs in mm with their metric scale, hand joints in m).",
    # UI events (the page's own controls; frame = the slider's 0-based frame index)
    "open_episode": "Open an episode in the page: timeline slider, the embedded Rerun recording and its id, plots "
                    "(wrist trajectory in m, confidence 0-1, reprojection error in px, calibration residual), worst "
                    "frames, the frame picture, scale, objects, review, instruction and history.",
    "frame_view": "Show one frame: the picture with projected joints (px), the selected joint's uv (px) / xyz (m), "
                  "the frame's review status and the view key 'episode@frame'.",
    "click_joint": "A click on the frame picture at (u, v) display pixels: moves the selected joint there, or sets a "
                   "box corner (click mode); returns the refreshed views.",
    "scale_preview": "Plot the point cloud before and after a new scale s (unitless factor) at one frame.",
    "ui_toggle_visibility": "Toggle the selected joint's visibility in the shown frame.",
    "ui_toggle_bad": "Toggle the shown frame's bad mark.",
    "ui_depth_minus": "Move the selected joint towards the camera by dz metres in the shown frame.",
    "ui_depth_plus": "Move the selected joint away from the camera by dz metres in the shown frame.",
    "ui_undo": "Undo the episode's last edit (page button).",
    "ui_redo": "Redo the episode's last undone edit (page button).",
    "ui_set_hand_scale": "Set the chosen hand's size (factor of the mean hand, unitless) from the Align tab.",
    "rollout": "A simulator rollout as a Rerun recording (camera images, robot state and actions per step).",
    "rollout_video": "A simulator rollout's video (mp4, the environment's frame rate).",
}


def describe(api_name: str) -> str:
    """The description of endpoint ``api_name`` (KeyError naming it when it has none)."""
    try:
        return API_DESCRIPTIONS[api_name]
    except KeyError:
        raise KeyError(f"Gradio endpoint /{api_name} has no description in app/api_docs.py API_DESCRIPTIONS") \
            from None
