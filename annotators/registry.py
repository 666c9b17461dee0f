"""Annotator plug-ins: hand, depth and object backends and the pipeline's stages, registered by name.

Backends (``kind`` one of ``hands``, ``depth``, ``objects``)
    ``register_backend(kind, name, factory, config_cls=None, description=..., arg=None)`` or the
    shorthands ``register_hand_backend`` / ``register_depth_backend`` / ``register_object_backend``
    (usable as decorators). ``factory(**options)`` builds the backend; ``config_cls`` is a small
    dataclass of its options (default: one derived from the factory's keyword parameters and
    their defaults). ``arg`` names the option that the ``NAME:ARG`` form fills (``hf:PATH`` fills
    ``path``). ``vipa annotate`` lists every registered backend with its description and
    defaults in ``--help``; ``--hands NAME --hands-opt KEY=VALUE``, ``--depth NAME[:ARG]
    --depth-opt KEY=VALUE`` and ``--objects NAME[:ARG],... --objects-opt NAME.KEY=VALUE`` reach
    them (values are parsed by the option's type).

Stages
    ``register_stage(name, run, config_cls, after=None, derive=None, product=None)``: ``run(state,
    cfg)`` works on ``annotators.pipeline.PipelineState``; a *derive* stage instead has ``derive(ep,
    cfg, seed) -> records``, written as ``derived/<product>.jsonl`` by ``write_annotation`` and
    recomputed after corrections by ``Workbench.rederive``. The built-in stages are registered in
    ``annotators.pipeline``; the built-in backends at the bottom of this module.

Adding a backend: one new file that defines it and calls ``register_*_backend``, plus one line
that imports that file: in ``annotators/backends/__init__.py`` (in-tree) or as an entry point in
the group ``vipa.annotators`` of your package (``name = "yourpkg.module"``). Both are loaded the
first time the registry is read.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from annotators.errors import BackendError

KINDS = ("hands", "depth", "objects")
ENTRY_POINT_GROUP = "vipa.annotators"


@dataclass(frozen=True)
class Backend:
    """One registered backend: ``factory(**options)`` builds it; options are ``config_cls`` fields."""

    kind: str
    name: str
    factory: Callable[..., Any]
    config_cls: type
    description: str = ""
    arg: str | None = None  # option filled by NAME:ARG

    def config(self, options: dict[str, Any] | None = None, arg: str | None = None) -> Any:
        """The options as a ``config_cls`` instance (unknown or missing ones: a clear ValueError)."""
        opts = dict(options or {})
        if arg is not None:
            if self.arg is None:
                raise ValueError(f"{self.kind} backend {self.name!r} takes no ':ARG'")
            opts[self.arg] = arg
        known = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ValueError(f"{self.kind} backend {self.name!r}: unknown option(s) {unknown}; "
                             f"known: {sorted(known) or 'none'}")
        try:
            return self.config_cls(**opts)
        except TypeError as exc:
            raise ValueError(f"{self.kind} backend {self.name!r}: {exc}") from None

    def build(self, options: dict[str, Any] | None = None, arg: str | None = None) -> Any:
        """The backend, built with the given options."""
        return self.factory(**dataclasses.asdict(self.config(options, arg)))

    def defaults(self) -> dict[str, Any]:
        """{option: default} (options without a default are left out)."""
        out = {}
        for f in dataclasses.fields(self.config_cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        return out


@dataclass(frozen=True)
class Stage:
    """One pipeline stage; ``derive`` set for stages whose records are re-derived after corrections."""

    name: str
    run: Callable[[Any, Any], None] | None  # None for derive stages (the pipeline stores their records)
    config_cls: type
    derive: Callable[[Any, Any, int], list[dict]] | None = None
    product: str | None = None
    description: str = ""


_BACKENDS: dict[str, dict[str, Backend]] = {k: {} for k in KINDS}
_STAGES: list[Stage] = []
_plugins_loaded = False


def config_from_signature(factory: Callable[..., Any], name: str) -> type:
    """A dataclass of ``factory``'s keyword parameters (types and defaults from its signature)."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolved annotations: fall back to Any
        hints = {}
    specs = []
    for p in inspect.signature(target).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        tp = hints.get(p.name, Any)
        specs.append((p.name, tp) if p.default is p.empty else (p.name, tp, field(default=p.default)))
    specs.sort(key=lambda s: len(s) == 3)  # fields without defaults first
    return dataclasses.make_dataclass(f"{name}Config", specs)


def register_backend(kind: str, name: str, factory: Callable[..., Any] | None = None, config_cls: type | None = None,
                     *, description: str = "", arg: str | None = None):
    """Register ``factory`` as the ``kind`` backend ``name`` (returns it, so usable as a decorator)."""
    if kind not in KINDS:
        raise ValueError(f"backend kind must be one of {KINDS}, got {kind!r}")
    if not name or ":" in name or "," in name:
        raise ValueError(f"backend name must be non-empty without ':' or ',', got {name!r}")

    def add(f: Callable[..., Any]) -> Callable[..., Any]:
        cfg = config_cls or config_from_signature(f, name.title().replace("-", "").replace("_", ""))
        if not dataclasses.is_dataclass(cfg):
            raise TypeError(f"{kind} backend {name!r}: config_cls must be a dataclass")
        if arg is not None and arg not in {x.name for x in dataclasses.fields(cfg)}:
            raise ValueError(f"{kind} backend {name!r}: arg {arg!r} is not an option")
        doc = description or (inspect.getdoc(f) or "").split("\n")[0]
        _BACKENDS[kind][name] = Backend(kind, name, f, cfg, doc, arg)
        return f

    return add if factory is None else add(factory)


def register_hand_backend(name: str, factory=None, config_cls=None, *, description: str = ""):
    """``register_backend("hands", ...)``: ``factory(**options)`` -> an ``annotators.hands.HandBackend``."""
    return register_backend("hands", name, factory, config_cls, description=description)


def register_depth_backend(name: str, factory=None, config_cls=None, *, description: str = "", arg: str | None = None):
    """``register_backend("depth", ...)``: ``factory(**options)`` -> an ``annotators.depth.DepthBackend``."""
    return register_backend("depth", name, factory, config_cls, description=description, arg=arg)


def register_object_backend(name: str, factory=None, config_cls=None, *, description: str = "", arg: str | None = None):
    """``register_backend("objects", ...)``: ``factory(**options)`` -> a callable ``(episode) -> [ObjectTrack]``."""
    return register_backend("objects", name, factory, config_cls, description=description, arg=arg)


def register_stage(name: str, run: Callable[[Any, Any], None] | None, config_cls: type, *, after: str | None = None,
                   derive: Callable[[Any, Any, int], list[dict]] | None = None, product: str | None = None,
                   description: str = "") -> Stage:
    """Add a pipeline stage (at the end, or right after the stage ``after``); re-registering replaces it."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"stage {name!r}: config_cls must be a dataclass")
    if (derive is None) != (product is None):
        raise ValueError(f"stage {name!r}: derive and product go together")
    if (run is None) == (derive is None):
        raise ValueError(f"stage {name!r}: give either run or derive")
    doc = description or (inspect.getdoc(run or derive) or "").split("\n")[0]
    stage = Stage(name, run, config_cls, derive, product, doc)
    old = [i for i, s in enumerate(_STAGES) if s.name == name]
    if old and after is None:
        _STAGES[old[0]] = stage
        return stage
    for i in reversed(old):
        del _STAGES[i]
    if after is None:
        _STAGES.append(stage)
    else:
        idx = [i for i, s in enumerate(_STAGES) if s.name == after]
        if not idx:
            raise ValueError(f"stage {name!r}: no stage {after!r} to follow")
        _STAGES.insert(idx[0] + 1, stage)
    return stage


def unregister_backend(kind: str, name: str) -> None:
    """Remove a registered backend (tests, or replacing a built-in under another name)."""
    _BACKENDS[kind].pop(name, None)


def unregister_stage(name: str) -> None:
    """Remove a registered stage."""
    _STAGES[:] = [s for s in _STAGES if s.name != name]


def load_plugins() -> None:
    """Import ``annotators.backends`` and the ``vipa.annotators`` entry points (once per process)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    importlib.import_module("annotators.backends")
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in is named, not hidden
            raise BackendError(f"entry point {ep.name} = {ep.value}", f"cannot be loaded: {exc}") from exc
        if callable(obj) and not inspect.ismodule(obj):
            obj()


def backends(kind: str) -> dict[str, Backend]:
    """The registered backends of ``kind`` by name (plug-ins loaded)."""
    load_plugins()
    if kind not in KINDS:
        raise ValueError(f"backend kind must be one of {KINDS}, got {kind!r}")
    return dict(_BACKENDS[kind])


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"NAME[:ARG]"`` -> (NAME, ARG or None)."""
    name, sep, arg = str(spec).strip().partition(":")
    return name, (arg if sep else None)


def get_backend(kind: str, name: str) -> Backend:
    """The registered backend (BackendError naming the known ones if none)."""
    found = backends(kind).get(name)
    if found is None:
        known = ", ".join(sorted(_BACKENDS[kind])) or "none"
        raise BackendError(name, f"unknown {kind} backend; registered: {known}")
    return found


def build_backend(kind: str, spec: str, options: dict[str, Any] | None = None) -> Any:
    """Build the backend named by ``spec`` (``NAME`` or ``NAME:ARG``) with ``options``."""
    name, arg = split_spec(spec)
    return get_backend(kind, name).build(options, arg)


def stages() -> list[Stage]:
    """The pipeline's stages in order (plug-ins loaded)."""
    load_plugins()
    return list(_STAGES)


def get_stage(name: str) -> Stage:
    for s in stages():
        if s.name == name:
            return s
    raise ValueError(f"unknown stage {name!r}; stages: {', '.join(s.name for s in _STAGES)}")


def parse_value(text: str, default: Any, hint: Any = None) -> Any:
    """A command-line string as an option value, typed like ``default`` (or JSON, else the string)."""
    t = text.strip()
    if isinstance(default, bool):
        low = t.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if t.lower() in ("none", "null"):
        return None
    if isinstance(default, int):
        return int(t)
    if isinstance(default, float):
        return float(t)
    if isinstance(default, (tuple, list)):
        return tuple(x.strip() for x in t.split(",") if x.strip())
    if isinstance(default, str):
        return text
    try:
        return json.loads(t)
    except ValueError:
        return text


def parse_options(pairs: list[str], config_cls: type, what: str) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> {KEY: typed value} for the fields of ``config_cls``."""
    fields_ = {f.name: f for f in dataclasses.fields(config_cls)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"{what}: expected KEY=VALUE, got {pair!r}")
        if key not in fields_:
            raise ValueError(f"{what}: unknown option {key!r}; known: {sorted(fields_) or 'none'}")
        f = fields_[key]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        try:
            out[key] = parse_value(value, default)
        except ValueError as exc:
            raise ValueError(f"{what}: option {key}: {exc}") from None
    return out


def describe_defaults(config_cls: type, exclude: tuple[str, ...] = ()) -> str:
    """``key=default, ...`` of a config dataclass (for ``--help``)."""
    parts = []
    for f in dataclasses.fields(config_cls):
        if f.name in exclude:
            continue
        if f.default is not dataclasses.MISSING:
            parts.append(f"{f.name}={f.default!r}")
        elif f.default_factory is not dataclasses.MISSING:
            parts.append(f"{f.name}={f.default_factory()!r}")
        else:
            parts.append(f"{f.name} (required)")
    return ", ".join(parts)


# ------------------------------------------------------------------------ built-in backends


def _register_builtins() -> None:
    from annotators import depth, hands, objects

    register_hand_backend("mediapipe", hands.MediaPipeHands,
                          description="MediaPipe Hands 0.10.14 (bundled models, offline)")
    register_depth_backend("sensor", depth.SensorDepth, description="the RGB-D input's own depth (metric)")
    register_depth_backend("hf", depth.HFDepth, arg="path",
                           description="transformers depth model from a local folder (relative depth, calibrated to the hands)")
    register_depth_backend("none", depth.NoDepth, description="no depth: hands only, no cloud")
    register_object_backend("grasp", objects.GraspProposals, objects.ProposalConfig,
                            description="cluster the cloud at the fingertips while grasping (needs depth)")
    register_object_backend("detector", objects.DetectorObjects, arg="path",
                            description="zero-shot detector (OWLv2 / Grounding DINO) from a local folder")
    register_object_backend("boxes", objects.BoxFileObjects, arg="path",
                            description='manual 2D boxes from a JSON file {"name": {"frame": [x0, y0, x1, y1]}}')


_register_builtins()
