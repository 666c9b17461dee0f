"""The Gradio layout and callbacks of the workbench (UI only: every computation is a
``Workbench`` method, which calls ``vipa`` / ``annotators``).

Named API endpoints (``gradio_client``): the JSON ones defined with ``gr.api`` at the bottom
(``/episodes``, ``/episode_info``, ``/joint``, ``/move_joint``, ``/set_visibility``,
``/nudge_depth``, ``/set_scale``, ``/set_box``, ``/mark_bad``, ``/interpolate``, ``/undo``,
``/redo``, ``/set_review``, ``/set_frame_review``, ``/set_instruction``, ``/history``, ``/export``,
``/worst_frames``, ``/recording``, ``/predict``) and the UI events
(``/open_episode``, ``/frame_view``, ``/click_joint``, ...).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import numpy as np
from gradio_rerun import Rerun

from app.api_docs import describe
from app.assets import warm_url
from app.workbench import TABLE_HEADERS, Workbench, load_upload_image
from vipa.conventions import HANDS, JOINT_NAMES
from vipa.data._io import atomic_write_bytes
from vipa.data.episode import REVIEW_STATUSES

SHORTCUTS_JS = """
<script>
// The embedded Rerun viewer is output-only from Python; its WebHandle can set the time cursor.
// wasm-bindgen registers each handle with a FinalizationRegistry: keep a weak reference to it.
(function () {
  const orig = FinalizationRegistry.prototype.register;
  window.__vipaHandles = [];
  FinalizationRegistry.prototype.register = function (target, held, token) {
    try {
      if (target && typeof target.set_time_for_timeline === 'function') window.__vipaHandles.push(new WeakRef(target));
    } catch (e) {}
    return orig.call(this, target, held, token);
  };
  // Show recording `rid` at `frame` (paused). The latest request wins and is retried until the
  // viewer holds that recording (it loads lazily, e.g. only once the Inspect tab is opened).
  window.__vipaWant = null;
  const apply = function () {
    const want = window.__vipaWant;
    if (!want) return true;
    const [rid, frame] = want;
    for (const ref of window.__vipaHandles) {
      const h = ref.deref();
      if (!h) continue;
      try {
        if (h.get_timeline_time_range(rid, 'frame') == null) continue;
        h.set_active_recording_id(rid);
        h.set_active_timeline(rid, 'frame');
        h.set_playing(rid, false);
        h.set_time_for_timeline(rid, 'frame', frame);
        window.__vipaShown = [rid, frame];
        window.__vipaWant = null;
        return true;
      } catch (e) {}
    }
    return false;
  };
  setInterval(apply, 300);
  // The page's own timings, written into the server's timing log ($VIPA_TIMING_LOG): the first
  // viewer that shows a recording, counted from the page being usable (an episode selected) and
  // from the first click on the Inspect tab.
  const report = function (name, s) {
    const tb = document.querySelector('#vipa-client-timing textarea, #vipa-client-timing input');
    if (!tb) return;
    const set = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(tb), 'value').set;
    set.call(tb, JSON.stringify({event: name, s: Math.round(s * 1000) / 1000}));
    tb.dispatchEvent(new Event('input', {bubbles: true}));
  };
  const clock = setInterval(function () {
    const now = performance.now();
    if (!window.__vipaUsableAt && document.querySelector('#vipa-episode input')?.value) window.__vipaUsableAt = now;
    if (window.__vipaUsableAt && window.__vipaShown) {
      report('page_first_viewer_after_usable', (now - window.__vipaUsableAt) / 1000);
      if (window.__vipaInspectAt) {
        const after = (now - window.__vipaInspectAt) / 1000;
        setTimeout(function () { report('page_first_viewer_after_inspect_click', after); }, 400);
      }
      clearInterval(clock);
    }
  }, 100);
  // The Inspect tab's plots are mounted once its viewer shows the recording (or 60 s after the
  // tab was first opened, should the viewer fail), so that they do not slow the viewer's start.
  let plotsShown = false;
  const showPlots = function () {
    const b = document.getElementById('vipa-show-plots');
    if (plotsShown || !b) return;
    plotsShown = true;
    b.click();
  };
  const plotsClock = setInterval(function () {
    if (window.__vipaShown && document.querySelector('#vipa-rerun canvas')) { showPlots(); clearInterval(plotsClock); }
  }, 200);
  document.addEventListener('click', function (e) {
    const t = e.target && e.target.closest && e.target.closest('button[role=tab]');
    if (t && !window.__vipaInspectAt && t.textContent.trim() === 'Inspect') {
      window.__vipaInspectAt = performance.now();
      setTimeout(showPlots, 60000);
    }
  }, true);
  window.vipaShowFrame = function (rid, frame) {
    if (!rid) return false;
    window.__vipaWant = [rid, Number(frame)];
    return apply();
  };
})();

document.addEventListener('keydown', (e) => {
  const t = e.target;
  if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
  const click = (id) => { const b = document.getElementById(id); if (b) { b.click(); e.preventDefault(); } };
  const k = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && k === 'z' && !e.shiftKey) click('vipa-undo');
  else if ((e.ctrlKey || e.metaKey) && (k === 'y' || (k === 'z' && e.shiftKey))) click('vipa-redo');
  else if (!e.ctrlKey && !e.metaKey && !e.altKey) {
    if (k === 'v') click('vipa-visibility');
    else if (k === 'b') click('vipa-bad');
    else if (k === '[' || k === 'arrowleft' && e.shiftKey) click('vipa-prev');
    else if (k === ']' || k === 'arrowright' && e.shiftKey) click('vipa-next');
    else if (k === 'w') click('vipa-depth-minus');
    else if (k === 's') click('vipa-depth-plus');
  }
});
</script>
"""

SHOW_JS = "(rid, f) => { window.vipaShowFrame && window.vipaShowFrame(rid, f); }"


def step_js(delta: int) -> str:
    """Page-side frame step: the slider's value +/- delta, clamped to its range."""
    return ("(f) => { const r = document.querySelector('#vipa-frame input[type=range]'); "
            "const mx = r ? Number(r.max) : Infinity; "
            f"return Math.min(mx, Math.max(0, Math.round(Number(f)) + ({int(delta)}))); }}")


def view_key_of(episode_id: str, frame: int) -> str:
    """The key of the view on screen: ``episode@frame``."""
    return f"{episode_id}@{int(frame)}"


def parse_view_key(key: str | None) -> tuple[str | None, int | None]:
    ep, sep, f = (key or "").rpartition("@")
    return (ep, int(f)) if sep and f.isdigit() else (None, None)


# The page talks to its own server only: no web fonts, no release checks, no telemetry from the
# embedded viewer (the browser refuses any other address, online or not).
CSP_META = ('<meta http-equiv="Content-Security-Policy" content="connect-src \'self\' blob: data:; '
            'font-src \'self\' blob: data:">')
# The wasm viewer logs tens of thousands of console.debug lines while it loads (26 000 for one
# recording) and its info lines through console.info; Gradio and the viewer's wrapper log with
# console.log. With developer tools or a test driver listening, each line costs: silent unless
# the page is opened with ?vipa_debug (warnings and errors always show).
QUIET_CONSOLE_JS = """
<script>
if (!/[?&]vipa_debug\\b/.test(window.location.search)) {
  console.debug = console.info = console.log = function () {};
}
</script>
"""
WARM_VIEWER_CSS = ("<style>#vipa-rerun-warm{position:fixed !important;left:-5000px;top:0;width:320px;"
                   "pointer-events:none;} #vipa-client-timing, #vipa-show-plots{display:none !important;}</style>")
PAGE_HEAD = CSP_META + QUIET_CONSOLE_JS + WARM_VIEWER_CSS + SHORTCUTS_JS

CLICK_MODES = ("moves the joint", "sets the box's top-left corner", "sets the box's bottom-right corner")
HELP_SHORTCUTS = ("Shortcuts (outside text fields): **Ctrl+Z** undo, **Ctrl+Y** redo, **V** toggle visibility, "
                  "**B** mark frame bad/good, **[** / **]** previous / next frame, **W** / **S** joint depth -/+ 1 cm.")


EXPECTED_ERRORS = (ValueError, KeyError, IndexError, FileNotFoundError, PermissionError, TypeError)


DEBUG = {"tracebacks": False}  # launch_app --debug turns tracebacks on in the terminal
# How the viewer is warmed while the user is on Browse (see build_ui): "wasm", "early" or "viewer"
# ($VIPA_WARM_VIEWER overrides, for comparisons).
WARM = {"mode": os.environ.get("VIPA_WARM_VIEWER", "wasm")}


def report_error(where: str, exc: BaseException) -> None:
    """One line in the terminal for an error shown in the page (the traceback with --debug)."""
    import sys
    import traceback

    if DEBUG["tracebacks"]:
        traceback.print_exception(exc)
    else:
        print(f"vipa workbench: {where}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def timed(name: str, fn: Callable) -> Callable:
    """Append the handler's server-side seconds to $VIPA_TIMING_LOG (JSON lines), when set: wall
    time (``s``) and the CPU time of the thread that ran it (``cpu_s``; on a loaded machine the
    wall time mostly measures the other processes)."""
    import functools
    import os
    import time

    path = os.environ.get("VIPA_TIMING_LOG")
    if not path:
        return fn

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            with open(path, "a") as f:
                f.write(json.dumps({"event": name, "s": round(time.perf_counter() - t0, 4),
                                    "cpu_s": round(time.thread_time() - c0, 4), "t": time.time()}) + "\n")

    return wrapper


CLIENT_TIMINGS = ("page_first_viewer_after_usable", "page_first_viewer_after_inspect_click")


def log_client_timing(text: str) -> None:
    """A timing the page measured (JSON {"event", "s"}) into $VIPA_TIMING_LOG, when set; anything
    else is ignored."""
    import os
    import time

    path = os.environ.get("VIPA_TIMING_LOG")
    if not path:
        return
    try:
        d = json.loads(text or "")
        name, s = d["event"], float(d["s"])
    except (ValueError, KeyError, TypeError):
        return
    if name in CLIENT_TIMINGS and 0 <= s < 3600:
        with open(path, "a") as f:
            f.write(json.dumps({"event": name, "s": round(s, 3), "t": time.time(), "source": "page"}) + "\n")


def _guard(fn: Callable) -> Callable:
    """Turn library errors into a visible gr.Error (no tracebacks in the page; one line in the
    terminal)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except EXPECTED_ERRORS as exc:
            report_error(getattr(fn, "__name__", "event"), exc)
            raise gr.Error(f"{type(exc).__name__}: {exc}", print_exception=DEBUG["tracebacks"]) from None

    return wrapper


class PredictorSlot:
    """A checkpoint loaded in the background (importing torch and the model takes seconds), so
    the page is served at once; ``get()`` is the predictor or None, ``note`` says why not."""

    def __init__(self, load: Callable[[], tuple[Any, str]]) -> None:
        import threading

        self.predictor: Any = None
        self.note = "loading the checkpoint…"
        self.loading = True
        self._thread = threading.Thread(target=self._run, args=(load,), daemon=True, name="vipa-predictor")
        self._start_lock = threading.Lock()

    def start(self) -> None:
        """Begin loading (once); called when the first page is served, so that importing torch
        does not compete with the server's start."""
        with self._start_lock:
            if not self._thread.is_alive() and self.loading and self._thread.ident is None:
                self._thread.start()

    def _run(self, load: Callable[[], tuple[Any, str]]) -> None:
        try:
            self.predictor, self.note = load()
        except Exception as exc:  # noqa: BLE001 - a bad checkpoint must not stop the workbench
            self.note = f"Predict tab disabled: {type(exc).__name__}: {exc}"
        finally:
            self.loading = False

    def get(self) -> Any:
        return self.predictor

    def wait(self, timeout: float | None = None) -> Any:
        self.start()
        self._thread.join(timeout)
        return self.predictor


def _resolve(predictor: Any) -> Any:
    return predictor.get() if isinstance(predictor, PredictorSlot) else predictor


WORST_HEADERS = ["frame", "reproj_px", "calib_residual", "lift depth ratio", "worst by"]


def hand_scale_controls():
    """The Align tab's hand-size row (issue 14): which hand, its size (times the mean hand), a
    button that records the correction, and the lift's estimates. Call inside the tab."""
    with gr.Row():
        with gr.Column(scale=1):
            hand = gr.Radio(list(HANDS), value="right", label="hand", elem_id="vipa-hand-scale-hand")
            nb = gr.Number(label="hand size (x the mean hand, 0.5-2)", value=1.0, minimum=0.5, maximum=2.0,
                           step=0.01, elem_id="vipa-hand-scale")
            btn = gr.Button("set hand size", elem_id="vipa-hand-scale-set")
        md = gr.Markdown(elem_id="vipa-hand-scale-info")
    return hand, nb, btn, md


def wire_hand_scale(wb: Callable[[], Workbench], bind: Callable, edit_handler: Callable, base_in: list,
                    episode_dd, hand, nb, btn, md) -> None:
    """Events of ``hand_scale_controls``: the button records a hand_scale edit (as every edit:
    refreshed views, undo/redo, history), then the estimates are redrawn; opening an episode or
    picking a hand shows them, the number box starting at that hand's current size."""

    @_guard
    def info(episode_id, side):
        if not episode_id:
            return "", gr.update()
        w = wb()
        rec = (w.episode(episode_id).extra.get("hand_scale") or {}).get(side) or {}
        return w.hand_scale_info(episode_id), round(float(rec["scale"]), 3) if rec.get("scale") else gr.update()

    bind(btn.click, edit_handler(lambda w, e, f, s, j, hs, v: w.set_hand_scale(e, hs, float(v))),
         base_in + [hand, nb], api_name="ui_set_hand_scale").then(info, [episode_dd, hand], [md, nb],
                                                                  api_visibility="private")
    for event in (episode_dd.change, hand.change):
        event(info, [episode_dd, hand], [md, nb], api_visibility="private")


def build_ui(wb_ref: Callable[[], Workbench | None], status: Callable[[], dict], predictor: Any = None,
             max_upload_mb: int = 20, rollouts: Any = None) -> gr.Blocks:
    """``wb_ref()`` returns the Workbench once the dataset is ready (None while the bundled
    sample is being built); ``status()`` returns {"ready": bool, "message": str, "progress": float}."""

    def wb() -> Workbench:
        w = wb_ref()
        if w is None:
            raise gr.Error("the dataset is still being prepared; see the progress bar at the top", print_exception=False)
        return w

    with gr.Blocks(title="VIPA workbench", fill_width=True) as demo:
        gr.Markdown("## VIPA workbench: Hand3D episodes, 2D-3D alignment, corrections, predictions")
        status_md = gr.Markdown(elem_id="vipa-status")
        progress_sl = gr.Slider(0, 1, value=0, label="preparing dataset", interactive=False, visible=False,
                                elem_id="vipa-progress")
        timer = gr.Timer(1.0)
        # Once the page's own data is in (so that it does not delay the first page), the viewer's
        # wasm (52 MB) is fetched and compiled while the user is on Browse, and the Inspect
        # tab's viewer starts from the compiled module. WARM["mode"] "wasm": only the compile
        # (app/assets.py's warm module); "viewer": an empty viewer mounted off screen (a whole
        # viewer started and drawing, GL context and shaders included).
        warm_mode = WARM["mode"] if WARM["mode"] == "viewer" or warm_url() else "viewer"  # "wasm", "early", "viewer"
        warm_viewer = Rerun(height=240, elem_id="vipa-rerun-warm", visible=False) if warm_mode == "viewer" else None
        view_key = gr.Textbox(visible=False, elem_id="vipa-view-key")  # "episode@frame" of the picture shown
        client_timing = gr.Textbox(elem_id="vipa-client-timing", container=False, show_label=False)  # hidden by CSS
        with gr.Row():
            episode_dd = gr.Dropdown(choices=[], label="episode", elem_id="vipa-episode", scale=3,
                                     allow_custom_value=True)
            frame_sl = gr.Slider(0, 1, value=0, step=1, label="frame", elem_id="vipa-frame", scale=5)
            prev_btn = gr.Button("◀ frame", elem_id="vipa-prev", scale=0, min_width=80)
            next_btn = gr.Button("frame ▶", elem_id="vipa-next", scale=0, min_width=80)

        with gr.Tabs():
            with gr.Tab("Browse", id="browse"):
                with gr.Row():
                    query_tb = gr.Textbox(label="filter (id, instruction, source)", scale=3)
                    review_dd = gr.Dropdown(["all", *REVIEW_STATUSES], value="all", label="review status", scale=1)
                    sort_dd = gr.Dropdown(TABLE_HEADERS, value="episode", label="sort by", scale=1)
                    desc_cb = gr.Checkbox(label="descending", value=False, scale=0)
                table_df = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, elem_id="vipa-table",
                                        label="episodes (click a row to open it everywhere; a blank calib_residual: "
                                              "no depth, so no point cloud to calibrate)", wrap=True)
                with gr.Accordion("failed episodes", open=False):
                    failed_df = gr.Dataframe(headers=["episode", "error"], interactive=False)

            with gr.Tab("Inspect", id="inspect") as inspect_tab:
                rid_tb = gr.Textbox(visible=False, elem_id="vipa-rid")
                viewer = Rerun(height=620, elem_id="vipa-rerun", panel_states={"blueprint": "collapsed",
                                                                            "selection": "collapsed"})
                # Mounted (made visible) once the viewer above shows its recording: mounting them
                # loads and runs Plotly (a 4.6 MB script, seconds of the page's main thread),
                # which would otherwise compete with the viewer's start. They hold their
                # figures while hidden.
                with gr.Row():
                    wrist_plot = gr.Plot(label="wrist x/y/z", visible=False, elem_id="vipa-wrist-plot")
                    conf_plot = gr.Plot(label="per-joint confidence", visible=False, elem_id="vipa-conf-plot")
                show_plots_btn = gr.Button("show plots", elem_id="vipa-show-plots")  # clicked by the page; hidden by CSS

            with gr.Tab("Align", id="align"):
                with gr.Row():
                    reproj_plot = gr.Plot(label="per-joint reprojection error")
                    resid_plot = gr.Plot(label="calibration residual")
                with gr.Row():
                    worst_df = gr.Dataframe(headers=WORST_HEADERS,
                                            interactive=False, elem_id="vipa-worst",
                                            label="worst frames (click to jump there)")
                    with gr.Column():
                        new_scale_nb = gr.Number(label="proposed scale s for this frame", value=1.0)
                        preview_btn = gr.Button("preview scale change")
                        scale_plot = gr.Plot(label="before / after scale change")
                hs_hand, hs_nb, hs_btn, hs_md = hand_scale_controls()

            with gr.Tab("Correct", id="correct"):
                with gr.Row():
                    with gr.Column(scale=3):
                        frame_img = gr.Image(type="numpy", format="jpeg", interactive=False, label="click to move the selected joint",
                                             elem_id="vipa-frame-image", buttons=[])
                        gr.Markdown(HELP_SHORTCUTS)
                    with gr.Column(scale=2):
                        with gr.Row():
                            hand_rd = gr.Radio(list(HANDS), value="right", label="hand", elem_id="vipa-hand")
                            joint_dd = gr.Dropdown(list(JOINT_NAMES), value="wrist", label="joint", elem_id="vipa-joint")
                        click_mode = gr.Radio(list(CLICK_MODES), value=CLICK_MODES[0], label="a click on the frame",
                                              elem_id="vipa-click-mode")
                        joint_md = gr.Markdown(elem_id="vipa-joint-info")
                        with gr.Row():
                            vis_btn = gr.Button("toggle visibility (V)", elem_id="vipa-visibility")
                            bad_btn = gr.Button("mark frame bad / good (B)", elem_id="vipa-bad")
                        with gr.Row():
                            dz_nb = gr.Number(value=0.01, label="depth step (m)", minimum=0.0005, maximum=0.5)
                            dminus_btn = gr.Button("closer (W)", elem_id="vipa-depth-minus")
                            dplus_btn = gr.Button("farther (S)", elem_id="vipa-depth-plus")
                        with gr.Row():
                            scale_nb = gr.Number(label="episode depth scale s", value=1.0, minimum=1e-4)
                            scale_btn = gr.Button("set scale")
                        with gr.Accordion("object box", open=False):
                            gr.Markdown("Draw: set the click mode to the box corners and click twice, then save.")
                            obj_dd = gr.Dropdown(choices=[], label="object")
                            with gr.Row():
                                bx0 = gr.Number(label="x0")
                                by0 = gr.Number(label="y0")
                                bx1 = gr.Number(label="x1")
                                by1 = gr.Number(label="y1")
                            box_btn = gr.Button("set box in this frame")
                        with gr.Accordion("keyframe interpolation", open=False):
                            gr.Markdown("Linearly interpolate the selected joint between two keyframes "
                                        "(both ends as they are now, corrected or not).")
                            with gr.Row():
                                kf0 = gr.Number(label="from frame", precision=0, value=0)
                                kf1 = gr.Number(label="to frame", precision=0, value=1)
                            interp_btn = gr.Button("interpolate")
                        with gr.Row():
                            undo_btn = gr.Button("undo (Ctrl+Z)", elem_id="vipa-undo")
                            redo_btn = gr.Button("redo (Ctrl+Y)", elem_id="vipa-redo")
                        with gr.Row():
                            review_rd = gr.Radio(list(REVIEW_STATUSES), label="episode review status", elem_id="vipa-review")
                            frame_review_rd = gr.Radio(list(REVIEW_STATUSES), label="this frame's review status",
                                                       elem_id="vipa-frame-review")
                        instr_tb = gr.Textbox(label="instruction", lines=2)
                        instr_btn = gr.Button("save instruction")
                        edit_md = gr.Markdown(elem_id="vipa-edit-status")
                history_df = gr.Dataframe(headers=["id", "when", "who", "what", "frame", "old", "new", "undone"],
                                          interactive=False, label="edit history of this episode", wrap=True,
                                          elem_id="vipa-history")
                with gr.Row():
                    export_tb = gr.Textbox(label="export folder name (inside <dataset>_exports/)", value="export")
                    export_btn = gr.Button("export merged dataset")

            with gr.Tab("Predict", id="predict"):
                predict_md = gr.Markdown()
                with gr.Row():
                    pred_instr = gr.Textbox(label="instruction", scale=3)
                    # a File, not an Image: Gradio would decode an Image itself and answer a garbled one
                    # with its own error; the Workbench checks the content and says what is wrong
                    pred_upload = gr.File(label="or upload a frame (PNG/JPEG)", file_types=[".png", ".jpg", ".jpeg"],
                                          type="filepath", scale=1, elem_id="vipa-upload")
                with gr.Accordion("depth for the uploaded frame (optional: without it the model uses RGB only)",
                                  open=False):
                    with gr.Row():
                        pred_depth = gr.File(label="depth map (16-bit PNG, same size as the frame)",
                                             file_types=[".png"], type="filepath", elem_id="vipa-upload-depth")
                        pred_unit = gr.Number(label="depth unit (metres per count; 0.001 = millimetres)",
                                              value=0.001, minimum=1e-6, maximum=0.999)
                        pred_K = gr.Textbox(label="intrinsics fx fy cx cy (pixels; empty: assumed from the frame size)",
                                            elem_id="vipa-upload-K")
                pred_btn = gr.Button("predict wrist trajectory", interactive=_resolve(predictor) is not None
                                     or isinstance(predictor, PredictorSlot))
                pred_out = gr.Markdown()
                pred_viewer = Rerun(height=520, elem_id="vipa-pred-rerun", visible=False)  # shown with a prediction
                pred_rid = gr.Textbox(visible=False)

            with gr.Tab("Rollouts", id="rollouts"):
                if rollouts is None:
                    gr.Markdown("No simulator rollouts loaded. Evaluate a checkpoint with "
                                "`vipa sim eval CHECKPOINT --out DIR`, then start the workbench with "
                                "`python launch_app.py --rollouts DIR`.")
                else:
                    gr.Markdown(rollouts.summary_markdown(), elem_id="vipa-rollout-summary")
                    names = rollouts.names()
                    if names:
                        roll_dd = gr.Dropdown(names, value=names[0], label="rollout", elem_id="vipa-rollout")
                        roll_viewer = Rerun(value=rollouts.recording(names[0]), height=560,
                                            elem_id="vipa-rollout-rerun")

                        def on_rollout(name):
                            return rollouts.recording(name) if name else None

                        roll_dd.change(_guard(on_rollout), [roll_dd], [roll_viewer], api_name="rollout",
                                       api_description=describe("rollout"))
                    videos = rollouts.video_names()
                    if videos:
                        video_dd = gr.Dropdown(videos, value=videos[0], label="rollout video", elem_id="vipa-rollout-video")
                        video_out = gr.Video(value=rollouts.video(videos[0]), interactive=False)
                        video_dd.change(_guard(lambda n: rollouts.video(n) if n else None), [video_dd], [video_out],
                                        api_name="rollout_video", api_description=describe("rollout_video"))

        # ------------------------------------------------------------ callbacks

        def on_timer(current):
            st = status()
            ready = st.get("ready", False)
            msg = st.get("message", "")
            bar = gr.update(visible=not ready and st.get("progress") is not None, value=st.get("progress") or 0)
            w = wb_ref()
            if w is None:  # nothing written yet
                return gr.update(value=msg), bar, gr.update(), gr.update(), gr.update(), gr.update(active=True)
            ids = w.ds.episode_ids()
            value = current if current in ids else (ids[0] if ids else None)
            return (gr.update(value=msg), bar, gr.update(choices=ids, value=value), w.table(), w.failed(),
                    gr.update(active=not ready))

        client_timing.change(log_client_timing, [client_timing], None, api_visibility="private",
                            show_progress="hidden", queue=False)

        timer.tick(on_timer, [episode_dd], [status_md, progress_sl, episode_dd, table_df, failed_df, timer],
                   api_visibility="private", show_progress="hidden")

        def on_load():
            if isinstance(predictor, PredictorSlot):
                predictor.start()
            st = status()
            ready = st.get("ready", False)
            w = wb_ref()
            if w is None:
                return (st.get("message", ""), gr.update(), gr.update(), gr.update(), gr.update(active=True),
                        _predict_status(predictor))
            ids = w.ds.episode_ids()
            return (st.get("message", ""), gr.update(choices=ids, value=ids[0] if ids else None),
                    w.table(), w.failed(), gr.update(active=not ready), _predict_status(predictor))

        loaded = demo.load(on_load, outputs=[status_md, episode_dd, table_df, failed_df, timer, predict_md],
                           api_visibility="private")
        if warm_viewer is not None:
            loaded.then(lambda: gr.update(visible=True), None, warm_viewer, api_visibility="private",
                        show_progress="hidden")
        else:
            warm_js = (f"() => {{ import({json.dumps(warm_url())}).then((m) => m.default())"
                       ".catch((e) => console.warn('viewer warm-up failed', e)); }")
            # "early": as the page mounts, beside its first data request; "wasm": once the data is in
            (demo.load if warm_mode == "early" else loaded.then)(None, None, None, js=warm_js)

        @_guard
        def refresh_table(query, review, sort_by, desc):
            return wb().table(query, review, sort_by, desc)

        for comp in (query_tb, review_dd, sort_dd, desc_cb):
            comp.change(refresh_table, [query_tb, review_dd, sort_dd, desc_cb], table_df, api_visibility="private",
                        show_progress="hidden")

        def on_table_select(evt: gr.SelectData, rows):
            try:
                r = evt.index[0]
                return gr.update(value=rows.iloc[r, 0] if hasattr(rows, "iloc") else rows[r][0])
            except (IndexError, KeyError, TypeError):
                return gr.update()

        table_df.select(on_table_select, [table_df], episode_dd, api_visibility="private")

        def _views(episode_id: str, frame: int, side: str, joint: str):
            w = wb()
            ep = w.episode(episode_id)
            frame = int(np.clip(frame or 0, 0, max(ep.num_frames - 1, 0)))
            rid = w.new_recording_id(episode_id)
            rrd = w.recording(episode_id, ep=ep, recording_id=rid)
            wrist, conf = w.inspect_figures(episode_id, frame, ep=ep)
            img = w.frame_image(episode_id, frame, side, joint, ep=ep)
            return ep, frame, (rid, rrd), wrist, conf, img

        @_guard
        def open_episode(episode_id, side, joint, progress=gr.Progress()):
            if not episode_id:
                return [gr.update()] * len(open_outputs)
            w = wb()
            progress(0.1, desc="loading episode and media")
            ep, frame, rrd, wrist, conf, img = _views(episode_id, 0, side, joint)
            progress(0.7, desc="alignment figures")
            rp, rs, worst = w.align(episode_id, 0)
            s = ep.depth_scale[np.isfinite(ep.depth_scale)]
            return (gr.update(maximum=max(ep.num_frames - 1, 1), value=0), rrd[1], rrd[0], wrist, conf, rp, rs, worst, img,
                    _joint_info(w, ep, 0, side, joint), float(np.median(s)) if s.size else 1.0,
                    gr.update(choices=_object_choices(ep), value=ep.objects[0].object_id if ep.objects else None),
                    ep.review_status, ep.instruction, w.history_rows(episode_id),
                    gr.update(value=max(ep.num_frames - 1, 1)),
                    f"opened **{episode_id}**: {ep.num_frames} frames, {ep.width}x{ep.height}",
                    _frame_review(ep, 0), view_key_of(episode_id, 0))

        open_outputs = [frame_sl, viewer, rid_tb, wrist_plot, conf_plot, reproj_plot, resid_plot, worst_df, frame_img, joint_md,
                        scale_nb, obj_dd, review_rd, instr_tb, history_df, kf1, edit_md, frame_review_rd, view_key]
        episode_dd.change(timed("open_episode", open_episode), [episode_dd, hand_rd, joint_dd], open_outputs, api_name="open_episode",
                          api_description=describe("open_episode")
                          ).then(None, [rid_tb, frame_sl], None, js=SHOW_JS)

        # The frame on screen: the picture, the joint info, the frame's review status and the
        # view key ("episode@frame") are always returned together, so the key names the frame
        # the picture shows. Every way of changing the frame (slider drag, its number box +
        # Enter, the [ ] keys and buttons, a table row) changes the slider, and the slider's
        # change event redraws all of them; edits are refused while the key lags the slider.
        view_outputs = [frame_img, joint_md, frame_review_rd, view_key]

        @_guard
        def frame_view(episode_id, frame, side, joint):
            if not episode_id:
                return [gr.update()] * len(view_outputs)
            w = wb()
            ep = w.episode(episode_id)
            f = int(np.clip(int(frame), 0, ep.num_frames - 1))
            prune_outputs()
            return (w.frame_image(episode_id, f, side, joint, ep=ep), _joint_info(w, ep, f, side, joint),
                    _frame_review(ep, f), view_key_of(episode_id, f))

        frame_sl.change(timed("frame_view", frame_view), [episode_dd, frame_sl, hand_rd, joint_dd], view_outputs, api_name="frame_view",
                        api_description=describe("frame_view"),
                        show_progress="hidden", trigger_mode="always_last"
                        ).then(None, [rid_tb, frame_sl], None, js=SHOW_JS)
        for comp in (hand_rd, joint_dd):
            comp.change(frame_view, [episode_dd, frame_sl, hand_rd, joint_dd], view_outputs,
                        api_visibility="private", show_progress="hidden", trigger_mode="always_last")

        # [ ] and the buttons step the slider in the page (no round trip, so fast repeats all count)
        prev_btn.click(None, [frame_sl], [frame_sl], js=step_js(-1), api_visibility="private")
        next_btn.click(None, [frame_sl], [frame_sl], js=step_js(+1), api_visibility="private")
        inspect_tab.select(None, [rid_tb, frame_sl], None, js=SHOW_JS)
        show_plots_btn.click(lambda: (gr.update(visible=True), gr.update(visible=True)), None, [wrist_plot, conf_plot],
                             api_visibility="private", show_progress="hidden", queue=False)

        @_guard
        def jump(evt: gr.SelectData, rows, episode_id):
            try:
                r = evt.index[0]
                f = int(rows.iloc[r, 0] if hasattr(rows, "iloc") else rows[r][0])
            except (IndexError, KeyError, TypeError, ValueError):
                return [gr.update()] * 3
            rp, rs, _ = wb().align(episode_id, f)
            return f, rp, rs  # the slider's change event redraws the frame

        worst_df.select(jump, [worst_df, episode_dd], [frame_sl, reproj_plot, resid_plot], api_visibility="private")

        @_guard
        def preview_scale(episode_id, frame, s):
            return wb().scale_preview(episode_id, int(frame), float(s))

        preview_btn.click(preview_scale, [episode_dd, frame_sl, new_scale_nb], scale_plot, api_name="scale_preview",
                          api_description=describe("scale_preview"))

        # edits: each returns the refreshed views of the frame it was made on
        edit_outputs = [frame_img, joint_md, viewer, rid_tb, wrist_plot, conf_plot, history_df, edit_md, review_rd,
                        instr_tb, frame_review_rd, view_key]

        def after_edit(episode_id, frame, side, joint, rid, message):
            """The views after an edit: the viewer gets an update of only what the action changed
            (into the recording it shows), not a new whole-episode recording."""
            w = wb()
            ep = w.episode(episode_id)
            f = int(np.clip(frame or 0, 0, max(ep.num_frames - 1, 0)))
            if rid and rid.startswith(f"{episode_id}-"):
                rrd = w.recording_update(episode_id, rid, w.last_change(episode_id))
            else:
                rid = w.new_recording_id(episode_id)
                rrd = w.recording(episode_id, ep=ep, recording_id=rid)
            wrist, conf = w.inspect_figures(episode_id, f, ep=ep)
            img = w.frame_image(episode_id, f, side, joint, ep=ep)
            prune_outputs()
            return (img, _joint_info(w, ep, f, side, joint), rrd, rid, wrist, conf, w.history_rows(episode_id),
                    message, ep.review_status, ep.instruction, _frame_review(ep, f), view_key_of(episode_id, f))

        class Refused(Exception):
            """An edit that is not applied; the page keeps its views and says why."""

        def shown_frame(episode_id, frame, key) -> int:
            """The frame the picture shows; Refused when the view is not (yet) the slider's frame."""
            if not episode_id:
                raise Refused("select an episode first")
            k_ep, k_f = parse_view_key(key)
            if k_ep != episode_id or k_f is None or k_f != int(frame):
                raise Refused(f"the view is still moving to frame {int(frame)}; edit again once it shows that frame")
            return k_f

        def refusable(fn: Callable, extra: int = 0) -> Callable:
            """Errors of an edit become a warning and a line beside the buttons; the views stay as they are."""
            import functools

            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                try:
                    return fn(*args, **kwargs)
                except gr.Error:
                    raise
                except Refused as exc:
                    msg = str(exc)
                except EXPECTED_ERRORS as exc:
                    report_error(getattr(fn, "__name__", "edit"), exc)
                    msg = f"{type(exc).__name__}: {exc}"
                gr.Warning(f"not applied: {msg}", duration=4)
                out = [gr.update()] * (len(edit_outputs) + extra)
                out[edit_outputs.index(edit_md)] = f"**not applied**: {msg}"
                return out
            return wrapper

        def edit_handler(action: Callable[..., str]):
            @refusable
            def fn(episode_id, frame, key, side, joint, rid, *args):
                f = shown_frame(episode_id, frame, key)
                msg = action(wb(), episode_id, f, side, joint, *args)
                return after_edit(episode_id, f, side, joint, rid, msg)
            return fn

        @_guard
        def resync(episode_id, frame, key, side, joint, rid=None):
            """After an edit: redraw when the slider moved on while the edit ran."""
            k_ep, k_f = parse_view_key(key)
            if not episode_id or (k_ep == episode_id and k_f == int(frame)):
                return [gr.update()] * len(view_outputs)
            return frame_view(episode_id, frame, side, joint)

        base_in = [episode_dd, frame_sl, view_key, hand_rd, joint_dd, rid_tb]

        def bind(event, fn, inputs, outputs=None, **kw):
            kw.setdefault("api_visibility", "undocumented" if kw.get("api_name") else "private")
            if kw.get("api_name"):
                kw.setdefault("api_description", describe(kw["api_name"]))
            fn = timed(kw.get("api_name") or getattr(fn, "__name__", "edit"), fn)
            return (event(fn, inputs, outputs or edit_outputs, **kw)
                    .then(resync, base_in, view_outputs, api_visibility="private", show_progress="hidden")
                    .then(None, [rid_tb, frame_sl], None, js=SHOW_JS))

        def on_click(episode_id, frame, key, side, joint, rid, mode, evt: gr.SelectData):
            f = shown_frame(episode_id, frame, key)
            w = wb()
            mag = w.display_factor(w.episode(episode_id))  # the picture is shown mag times larger
            u, v = (float(evt.index[0]) + 0.5) / mag, (float(evt.index[1]) + 0.5) / mag  # clicked pixel's centre
            if mode == CLICK_MODES[1]:
                return [gr.update()] * len(edit_outputs) + [round(u, 1), round(v, 1), gr.update(), gr.update()]
            if mode == CLICK_MODES[2]:
                return [gr.update()] * len(edit_outputs) + [gr.update(), gr.update(), round(u, 1), round(v, 1)]
            msg = w.move_joint(episode_id, f, side, joint, u, v)
            return list(after_edit(episode_id, f, side, joint, rid, msg)) + [gr.update()] * 4

        bind(frame_img.select, refusable(on_click, extra=4), base_in + [click_mode], edit_outputs + [bx0, by0, bx1, by1],
             api_name="click_joint", api_visibility="public")
        # the page's own events are named (ui_*) so scripts and tests can drive them as the page does
        bind(vis_btn.click, edit_handler(lambda w, e, f, s, j: w.toggle_visibility(e, f, s, j)), base_in,
             api_name="ui_toggle_visibility")
        bind(bad_btn.click, edit_handler(lambda w, e, f, s, j: w.toggle_bad(e, f)), base_in, api_name="ui_toggle_bad")
        bind(dminus_btn.click, edit_handler(lambda w, e, f, s, j, dz: w.nudge_depth(e, f, s, j, -float(dz))),
             base_in + [dz_nb], api_name="ui_depth_minus")
        bind(dplus_btn.click, edit_handler(lambda w, e, f, s, j, dz: w.nudge_depth(e, f, s, j, float(dz))),
             base_in + [dz_nb], api_name="ui_depth_plus")
        bind(scale_btn.click, edit_handler(lambda w, e, f, s, j, sc: w.set_scale(e, float(sc))), base_in + [scale_nb])
        wire_hand_scale(wb, bind, edit_handler, base_in, episode_dd, hs_hand, hs_nb, hs_btn, hs_md)
        bind(box_btn.click, edit_handler(lambda w, e, f, s, j, o, a, b, c, d: w.set_box(e, f, o, [a, b, c, d])),
             base_in + [obj_dd, bx0, by0, bx1, by1])
        bind(interp_btn.click, edit_handler(lambda w, e, f, s, j, a, b: w.interpolate(e, s, j, int(a), int(b))),
             base_in + [kf0, kf1])
        bind(undo_btn.click, edit_handler(lambda w, e, f, s, j: w.undo(e)), base_in, api_name="ui_undo")
        bind(redo_btn.click, edit_handler(lambda w, e, f, s, j: w.redo(e)), base_in, api_name="ui_redo")
        bind(review_rd.input, edit_handler(lambda w, e, f, s, j, r: w.set_review(e, r)), base_in + [review_rd])
        bind(frame_review_rd.input, edit_handler(lambda w, e, f, s, j, r: w.set_frame_review(e, f, r)),
             base_in + [frame_review_rd])
        bind(instr_btn.click, edit_handler(lambda w, e, f, s, j, t: w.set_instruction(e, t)), base_in + [instr_tb])

        @_guard
        def do_export(name):
            return f"exported to `{wb().export(name)}`"

        export_btn.click(lambda: "", None, edit_md, api_visibility="private", show_progress="hidden").then(
            do_export, [export_tb], edit_md, api_visibility="private")

        @_guard
        def do_predict(episode_id, frame, instruction, upload, depth_upload=None, depth_unit=0.001, intrinsics="",
                       progress=gr.Progress()):
            if upload:  # checked first: a file that is not an image is answered whatever else is missing
                try:
                    load_upload_image(upload, max_upload_mb)
                except ValueError as exc:  # a plain sentence where the result goes
                    return str(exc), gr.update(), ""
            if _resolve(predictor) is None:
                return _predict_status(predictor), gr.update(), ""
            progress(0.2, desc="predicting")
            w = wb()
            try:
                res = w.predict(_resolve(predictor), episode_id, int(frame), instruction, upload, max_upload_mb,
                                depth_upload, float(depth_unit if depth_unit is not None else 0.001), intrinsics or "")
            except ValueError as exc:  # a bad depth map or intrinsics: a plain sentence where the result goes
                if not upload and not depth_upload:
                    raise
                return str(exc), gr.update(), ""
            rrd = res.get("rrd")
            return res["message"], gr.update(value=rrd, visible=rrd is not None), res.get("recording_id") or ""

        pred_btn.click(do_predict, [episode_dd, frame_sl, pred_instr, pred_upload, pred_depth, pred_unit, pred_K],
                       [pred_out, pred_viewer, pred_rid],
                       api_visibility="private").then(None, [pred_rid, frame_sl], None, js=SHOW_JS)

        # ------------------------------------------------------------ JSON API (gradio_client)
        _register_api(wb, predictor, max_upload_mb)

    return demo


def _joint_info(w: Workbench, ep, frame: int, side: str, joint: str) -> str:
    info = w.joint_state(ep, frame, side, joint)
    if info is None:
        return f"**{side} {joint}**, frame {frame}: hand not present"
    uv = info["uv"]
    xyz = info["xyz"]
    fmt = lambda v, d: ", ".join("nan" if v is None or x is None else f"{x:.{d}f}" for x in (v or [None]))
    return (f"**{side} {joint}**, frame {frame}: {'visible' if info['valid'] else 'hidden'}, "
            f"pixel ({fmt(uv, 1)}), camera ({fmt(xyz, 3)}) m, confidence {info['confidence']:.2f}"
            f"{'' if info['frame_valid'] else ' — frame marked bad'}; frame review: {info['frame_review']}")


OUTPUT_FILE_NAMES = ("rrd", "image.jpeg", "image.png", "image.webp")  # what Gradio names files it makes of outputs
KEEP_OUTPUT_FILES = 32


def prune_outputs(cache_dir: str | Path | None = None, keep: int = KEEP_OUTPUT_FILES) -> int:
    """Delete all but the newest ``keep`` files that Gradio wrote for this app's outputs
    (frames, viewer updates) in its cache folder; the page fetches each at once, so older ones
    are never read again. Returns how many were deleted."""
    import os

    from gradio.utils import get_upload_folder

    root = Path(cache_dir or get_upload_folder())
    found = []
    try:
        for d in os.scandir(root):
            if d.is_dir(follow_symlinks=False):
                for f in os.scandir(d.path):
                    if f.name in OUTPUT_FILE_NAMES:
                        found.append((f.stat().st_mtime_ns, f.path))
    except FileNotFoundError:
        return 0
    found.sort(reverse=True)
    n = 0
    for _, path in found[keep:]:
        try:
            os.remove(path)
            os.rmdir(os.path.dirname(path))
        except OSError:  # already gone, or the folder holds other files
            pass
        n += 1
    return n


def _object_choices(ep) -> list[tuple[str, str]]:
    """Dropdown choices for object boxes: "label (id)" shown, the id as the value."""
    return [(f"{o.name} ({o.object_id})" if o.name and o.name != o.object_id else o.object_id, o.object_id)
            for o in ep.objects]


def _frame_review(ep, frame: int) -> str:
    return (ep.extra or {}).get("frame_review", {}).get(str(frame), "todo")


def _predict_status(predictor: Any) -> str:
    if isinstance(predictor, PredictorSlot):
        if predictor.loading:
            return "**Loading the checkpoint…** (the Predict tab works once it is loaded; reload the page to see it)"
        if predictor.get() is None and predictor.note:
            return f"**{predictor.note}**"
        predictor = predictor.get()
    if predictor is None:
        return ("**No checkpoint is loaded.** Start the app with `--checkpoint PATH` (a checkpoint trained with "
                "`vipa train`) to predict wrist trajectories here.")
    where = getattr(predictor, "vipa_checkpoint_path", type(predictor).__name__)
    return (f"Checkpoint loaded: `{where}`. Pick an episode and frame (or upload a frame) and an instruction "
            "(empty: the episode's); the predicted wrist waypoints are drawn in magenta beside the demonstrated "
            "trajectory.")


def _register_api(wb: Callable[[], Workbench], predictor: Any, max_upload_mb: int) -> None:
    """JSON endpoints for scripting; every argument is checked by the Workbench."""

    def api(name: str):
        def deco(fn):
            gr.api(_guard(fn), api_name=name, api_description=describe(name))
            return fn
        return deco

    @api("episodes")
    def episodes(query: str = "", review: str = "all") -> list:
        return [dict(zip(TABLE_HEADERS, r)) for r in wb().table(query, review)]

    @api("episode_info")
    def episode_info(episode_id: str) -> dict:
        return wb().episode_info(episode_id)

    @api("joint")
    def joint(episode_id: str, frame: int, side: str, joint: str) -> dict:
        w = wb()
        return w.joint_state(w.episode(episode_id), int(frame), side, joint) or {}

    @api("move_joint")
    def move_joint(episode_id: str, frame: int, side: str, joint: str, u: float, v: float) -> str:
        return wb().move_joint(episode_id, int(frame), side, joint, float(u), float(v))

    @api("set_visibility")
    def set_visibility(episode_id: str, frame: int, side: str, joint: str, visible: bool) -> str:
        return wb().set_visibility(episode_id, int(frame), side, joint, bool(visible))

    @api("nudge_depth")
    def nudge_depth(episode_id: str, frame: int, side: str, joint: str, dz: float) -> str:
        return wb().nudge_depth(episode_id, int(frame), side, joint, float(dz))

    @api("set_scale")
    def set_scale(episode_id: str, scale: float) -> str:
        return wb().set_scale(episode_id, float(scale))

    @api("set_box")
    def set_box(episode_id: str, frame: int, object_id: str, x0: float, y0: float, x1: float, y1: float) -> str:
        return wb().set_box(episode_id, int(frame), object_id, [x0, y0, x1, y1])

    @api("mark_bad")
    def mark_bad(episode_id: str, frame: int, bad: bool) -> str:
        return wb().mark_bad(episode_id, int(frame), bool(bad))

    @api("interpolate")
    def interpolate(episode_id: str, side: str, joint: str, start: int, end: int) -> str:
        return wb().interpolate(episode_id, side, joint, int(start), int(end))

    @api("undo")
    def undo(episode_id: str) -> str:
        return wb().undo(episode_id)

    @api("redo")
    def redo(episode_id: str) -> str:
        return wb().redo(episode_id)

    @api("set_review")
    def set_review(episode_id: str, status: str) -> str:
        return wb().set_review(episode_id, status)

    @api("set_frame_review")
    def set_frame_review(episode_id: str, frame: int, status: str) -> str:
        return wb().set_frame_review(episode_id, int(frame), status)

    @api("set_instruction")
    def set_instruction(episode_id: str, text: str) -> str:
        return wb().set_instruction(episode_id, text)

    @api("history")
    def history(episode_id: str) -> list:
        return wb().history(episode_id)

    @api("export")
    def export(name: str) -> str:
        return wb().export(name)

    @api("worst_frames")
    def worst_frames(episode_id: str, k: int = 10) -> list:
        _, _, rows = wb().align(episode_id, None, int(k))
        return [dict(zip(["frame", "reproj_px", "calib_residual", "lift_depth_ratio", "by"], r)) for r in rows]

    @api("set_hand_scale")
    def set_hand_scale(episode_id: str, side: str, scale: float) -> str:
        return wb().set_hand_scale(episode_id, side, float(scale))

    @api("predict")
    def predict(episode_id: str, frame: int, instruction: str = "") -> dict:
        if isinstance(predictor, PredictorSlot) and predictor.loading:
            predictor.wait(120)
        if _resolve(predictor) is None:
            raise gr.Error("no checkpoint is loaded (start the app with --checkpoint PATH)")
        res = wb().predict(_resolve(predictor), episode_id, int(frame), instruction, None, max_upload_mb)
        return {k: res[k] for k in ("message", "error_m", "recording_id", "frame") if k in res}

    rrd_dir = Path(tempfile.mkdtemp(prefix="vipa-rrd-"))  # one file per episode, replaced on each call

    def recording(episode_id: str) -> str:
        """The episode's .rrd as a file: Gradio copies it into its cache and clients download it."""
        w = wb()
        data = w.recording(w.check_episode(episode_id))
        out = rrd_dir / f"{episode_id}.rrd"
        atomic_write_bytes(out, data)
        return str(out)

    # a file output (not gr.api's JSON): gradio_client downloads the .rrd instead of getting a server path
    rec_in = gr.Textbox(visible=False, label="episode_id")
    rec_out = gr.File(visible=False, label="recording (.rrd)")
    # triggered by the hidden box's submit (never by the page: gr.on(None, ...) also runs at page load, with no
    # episode, and showed "no episode selected" to every visitor); API clients call it by name
    gr.on([rec_in.submit], _guard(recording), [rec_in], [rec_out], api_name="recording",
          api_description=describe("recording"))
