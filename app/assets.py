"""The embedded Rerun viewer's 70 MB JavaScript bundle (the wasm viewer inlined as base64), served
as a small module plus the wasm as its own file, from compressed copies made once, with ETags.

Gradio compresses every .js response on the fly (brotli, quality 4, chunk by chunk): for this
bundle that is 20-40 s of server CPU on each page load of a loaded machine before the Inspect tab
can draw anything, and the response carries no validator, so a reload pays it again.
``PrecompressedAssets`` (an ASGI middleware, installed by ``launch_app.py`` through
``launch(app_kwargs={"middleware": ...})``) answers the bundle's route itself: the brotli
(quality 5, 70 -> 18.5 MB) or gzip copy, made once in a background thread at start and kept in
``cache/viewer_assets`` keyed by the file's size and modification time, with
``ETag`` + ``Cache-Control: no-cache``, so a reload gets ``304 Not Modified``. Every other
request goes through untouched. ``preload_link()`` is the ``<link rel=modulepreload>`` for the
page head, so the browser fetches and parses the bundle while the first tab is shown.

The bundle inlines the 52 MB wasm viewer as a base64 ``data:`` URL and hands the fetched wasm to
``WebAssembly.compileStreaming`` through a progress-counting ``new Response(stream)``. Both keep
Chromium from caching the compiled code (it caches only a response fetched from an http(s) URL),
and the browser parses a 70 MB script. ``split_bundle`` rewrites the bundle once: the wasm goes
to ``re_viewer_bg-<hash>.wasm`` beside it (``application/wasm``, immutable: its name changes with
its content) and is compiled straight from that fetch, so a returning visit loads the compiled
module from the browser's code cache instead of compiling 52 MB again; the module left is 170 KB.
Everything that starts before the first compile ends (the page's warm-up, the Inspect tab's
viewer, a second viewer) shares one compile through ``globalThis.__vipaViewerWasm`` instead of
compiling side by side. ``component/vipa-warm.js`` (``warm_url()``) is a small module whose
default export starts that compile; the page calls it once its data is in, while the user is on
Browse. A bundle that does not have exactly that shape is served as it is (and no warm-up module).

No gradio import at module level (the middleware is plain ASGI)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vipa.resources import REPO_ROOT

DEFAULT_CACHE = REPO_ROOT / "cache" / "viewer_assets"
API_PREFIX = "/gradio_api"
ROUTE = re.compile(r"/custom_component/(?P<id>[0-9a-f]{64})/client/(?P<path>component/[A-Za-z0-9_.-]+\.(?:js|css|wasm))$")
MIN_SIZE = 1 << 20  # only files this big are worth a stored copy
BUNDLE = "component/index.js"
# the inlined wasm, and the progress wrapper around its fetch (gradio_rerun 0.39's bundle)
WASM_DATA_URL = re.compile(rb'new URL\("data:application/wasm;base64,([A-Za-z0-9+/=]+)", import\.meta\.url\)')
WASM_WRAPPER = re.compile(rb"(Failed to fetch viewer Wasm: [^`]*`\);\s*return )[\w$]+\(([\w$]+), [\w$]+\);")
# viewers started before the first compile ends each fetch and compile the wasm: the compile is
# shared through one promise
WASM_COMPILE = re.compile(rb"\(!([\w$]+) \|\| !([\w$]+)\) && \(\[\1, \2\] = await (Promise\.all\(\[\s*[\w$]+\(\),\s*"
                          rb"WebAssembly\.compileStreaming\([\w$]+\([\w$]+, [\w$]+\)\)\s*\]\))\);")
IMMUTABLE = b"public, max-age=31536000, immutable"
REWRITE = 2  # version of split_bundle's rewrite, part of the stored copies' keys


@dataclass
class SplitBundle:
    """The bundle with its wasm moved out: the module's text, the wasm, the wasm's file name."""

    js: bytes
    wasm: bytes
    wasm_name: str
    glue_name: str | None  # the wasm-bindgen glue module the bundle imports (re_viewer-<hash>.js)


def split_bundle(data: bytes) -> SplitBundle | None:
    """The bundle's inlined wasm moved to ``re_viewer_bg-<sha256[:16]>.wasm`` next to it and compiled
    from that fetch directly, once per page however many viewers start at once; None when ``data``
    is not a bundle of that shape (one data URL holding a wasm module, one progress wrapper)."""
    urls = list(WASM_DATA_URL.finditer(data))
    if len(urls) != 1:
        return None
    m = urls[0]
    wasm = base64.b64decode(m.group(1))
    if wasm[:4] != b"\0asm":
        return None
    name = f"re_viewer_bg-{hashlib.sha256(wasm).hexdigest()[:16]}.wasm"
    js = data[:m.start()] + f'new URL("./{name}", import.meta.url)'.encode() + data[m.end():]
    js, n = WASM_WRAPPER.subn(rb"\1\2;", js)
    if n != 1:
        return None
    js = WASM_COMPILE.sub(rb"(!\1 || !\2) && ([\1, \2] = await (globalThis.__vipaViewerWasm ??= \3));", js, count=1)
    glue = re.findall(rb'import\("\./(re_viewer-[\w.-]+\.js)"\)', js)
    return SplitBundle(js, wasm, name, glue[0].decode() if len(glue) == 1 and b"__vipaViewerWasm" in js else None)


WARM_SCRIPT = "component/vipa-warm.js"
WARM_JS = """// Fetch and compile the viewer's wasm (and import its glue) before any viewer starts; the
// bundle's viewers take the module from globalThis.__vipaViewerWasm (app/assets.py).
export default function warm() {
  globalThis.__vipaViewerWasm ??= Promise.all([
    import(new URL("./%(glue)s", import.meta.url)).then((m) => m.default),
    WebAssembly.compileStreaming(fetch(new URL("./%(wasm)s", import.meta.url))),
  ]).catch((e) => { globalThis.__vipaViewerWasm = undefined; throw e; });
  return globalThis.__vipaViewerWasm;
}
"""


def warm_url(prefix: str = API_PREFIX) -> str:
    """URL of the module whose default export starts the viewer's wasm compile (empty without
    gradio_rerun)."""
    try:
        cid, _ = rerun_component()
    except ImportError:
        return ""
    return f"{prefix}/custom_component/{cid}/client/{WARM_SCRIPT}"


@dataclass
class Compressed:
    body: bytes
    etag: str
    encoding: str
    media_type: str
    cache_control: str = "no-cache"


def rerun_component() -> tuple[str, Path]:
    """(Gradio's class id of the Rerun component, its template folder)."""
    import inspect

    from gradio_rerun import Rerun

    return Rerun.get_component_class_id(), Path(inspect.getfile(Rerun)).parent / "templates"


def preload_link(prefix: str = API_PREFIX) -> str:
    """``<link rel=modulepreload>`` for the viewer bundle (empty when gradio_rerun is missing)."""
    try:
        cid, _ = rerun_component()
    except ImportError:
        return ""
    return f'<link rel="modulepreload" href="{prefix}/custom_component/{cid}/client/component/index.js">'


class AssetStore:
    """Compressed copies of the big files of a component's ``templates`` folder, made on demand
    (once per file and encoding; a second caller waits for the first) and stored on disk. The
    bundle is served split (``split_bundle``): ``component/index.js`` without the wasm, and
    ``component/re_viewer_bg-<hash>.wasm``."""

    def __init__(self, template_dir: Path, cache_dir: Path | None = DEFAULT_CACHE, split: bool = True) -> None:
        self.template_dir = Path(template_dir).resolve()
        self.split_wasm = split
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._lock = threading.Lock()
        self._split_lock = threading.Lock()
        self._done: dict[tuple[str, str], Compressed | None] = {}
        self._busy: dict[tuple[str, str], threading.Event] = {}
        self._split: tuple[SplitBundle | None] | None = None  # (result,) once tried

    def file(self, rel: str) -> Path | None:
        p = (self.template_dir / rel).resolve()
        if self.template_dir not in p.parents or not p.is_file() or p.stat().st_size < MIN_SIZE:
            return None
        return p

    def _tag(self, src: Path, what: str) -> str:
        st = src.stat()
        return hashlib.sha256(f"{src}|{st.st_size}|{st.st_mtime_ns}|{what}|{REWRITE}".encode()).hexdigest()[:24]

    def split(self) -> SplitBundle | None:
        """The bundle split in two (made once per process; None when it cannot be split)."""
        with self._split_lock:
            if self._split is None:
                src = self.file(BUNDLE)
                self._split = (split_bundle(src.read_bytes()) if src is not None else None,)
            return self._split[0]

    def names(self) -> tuple[str | None, str | None]:
        """File names of the split-off wasm and of the glue module the bundle imports (remembered
        on disk, so a restart does not split again); (None, None) when not split."""
        src = self.file(BUNDLE)
        if src is None or not self.split_wasm:
            return None, None
        note = self.cache_dir / f"split-names-{self._tag(src, 'split')}.txt" if self.cache_dir is not None else None
        if note is not None and note.is_file():
            parts = note.read_text().split() + [None, None]
            return parts[0], parts[1] if parts[0] else None
        sp = self.split()
        if note is not None:
            _write(note, (f"{sp.wasm_name} {sp.glue_name or ''}" if sp else "").encode())
        return (sp.wasm_name, sp.glue_name) if sp else (None, None)

    def wasm_name(self) -> str | None:
        """File name of the split-off wasm, or None."""
        return self.names()[0]

    def warm_script(self) -> bytes | None:
        """The ``WARM_SCRIPT`` module's text, or None (bundle not split, or no glue module found)."""
        wasm, glue = self.names()
        return (WARM_JS % {"glue": glue, "wasm": wasm}).encode() if wasm and glue else None

    def is_asset(self, rel: str) -> bool:
        """Whether ``rel`` is one of the files this store answers."""
        if rel == WARM_SCRIPT:
            return self.warm_script() is not None
        return self.file(rel) is not None or (rel.endswith(".wasm") and rel == f"component/{self.wasm_name()}")

    def get(self, rel: str, encoding: str) -> Compressed | None:
        """The ``encoding`` ("br", "gzip", or "identity": the split parts only) copy of ``rel``, or
        None (no such big file)."""
        key = (rel, encoding)
        while True:
            with self._lock:
                if key in self._done:
                    return self._done[key]
                ev = self._busy.get(key)
                mine = ev is None
                if mine:
                    ev = self._busy[key] = threading.Event()
            if not mine:
                ev.wait()
                continue
            try:
                out = self._make(rel, encoding)
            except OSError:
                out = None
            with self._lock:
                self._done[key] = out
                self._busy.pop(key).set()
            return out

    def _make(self, rel: str, encoding: str) -> Compressed | None:
        bundle = self.file(BUNDLE)
        if rel == WARM_SCRIPT:
            body = self.warm_script()
            tag = hashlib.sha256(body or b"").hexdigest()[:24]
            return Compressed(body, f'"{tag}"', "identity", "text/javascript; charset=utf-8") if body else None
        if rel == BUNDLE and self.wasm_name() is not None:
            src, what, media, cache = bundle, "split", "text/javascript; charset=utf-8", "no-cache"
            body_of = lambda: self.split().js  # noqa: E731
        elif rel.endswith(".wasm") and bundle is not None and rel == f"component/{self.wasm_name()}":
            src, what, media, cache = bundle, "wasm", "application/wasm", IMMUTABLE.decode()
            body_of = lambda: self.split().wasm  # noqa: E731
        else:
            src = self.file(rel)
            if src is None:
                return None
            what, cache = "whole", "no-cache"
            media = "text/css" if src.suffix == ".css" else "text/javascript; charset=utf-8"
            body_of = src.read_bytes
        tag = self._tag(src, f"{what}|{encoding}")
        if encoding == "identity":  # for a client that takes no compression: the split parts only
            return Compressed(body_of(), f'"{tag}"', encoding, media, cache) if what != "whole" else None
        stored = self.cache_dir / f"{src.stem}-{what}-{tag}.{encoding}" if self.cache_dir is not None else None
        if stored is not None and stored.is_file():
            return Compressed(stored.read_bytes(), f'"{tag}"', encoding, media, cache)
        data = body_of()
        if encoding == "br":
            import brotli

            body = brotli.compress(data, quality=5)
        else:
            body = gzip.compress(data, 6, mtime=0)
        if stored is not None:
            _write(stored, body)
        return Compressed(body, f'"{tag}"', encoding, media, cache)

    def warm(self, encoding: str = "br") -> threading.Thread:
        """Make the bundle's copies in a background thread (at start, before the first page asks)."""

        def run() -> None:
            self.get(BUNDLE, encoding)
            name = self.wasm_name()
            if name:
                self.get(f"component/{name}", encoding)

        th = threading.Thread(target=run, daemon=True, name="vipa-assets")
        th.start()
        return th


def _write(path: Path, data: bytes) -> None:
    """Atomic write; a read-only cache folder only means the copy is kept in memory."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        pass


def _accepts(header: str, encoding: str) -> bool:
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() == encoding:
            q = params.replace(" ", "").partition("q=")[2]
            try:
                return not q or float(q) > 0
            except ValueError:
                return True
    return False


class PrecompressedAssets:
    """ASGI middleware: GET of the Rerun component's big bundle files (and the wasm split off the
    bundle) -> the stored compressed copy (304 when the browser's ETag matches); anything else ->
    the wrapped app."""

    def __init__(self, app: Any, component_id: str | None = None, template_dir: Path | None = None,
                 cache_dir: Path | None = DEFAULT_CACHE, warm: bool = True, split: bool | None = None) -> None:
        self.app = app
        if component_id is None or template_dir is None:
            component_id, template_dir = rerun_component()
        self.component_id = component_id
        if split is None:  # VIPA_VIEWER_WASM_SPLIT=0: the bundle as gradio_rerun ships it (for comparisons)
            split = os.environ.get("VIPA_VIEWER_WASM_SPLIT", "1") != "0"
        self.store = AssetStore(template_dir, cache_dir, split)
        if warm:
            self.store.warm()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        m = ROUTE.search(scope.get("path", ""))
        if m is None or m.group("id") != self.component_id:
            return await self.app(scope, receive, send)
        import anyio

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        accept = headers.get("accept-encoding", "")
        encoding = "br" if _accepts(accept, "br") else "gzip" if _accepts(accept, "gzip") else "identity"
        if not await anyio.to_thread.run_sync(self.store.is_asset, m.group("path")):
            return await self.app(scope, receive, send)
        item = await anyio.to_thread.run_sync(self.store.get, m.group("path"), encoding)
        if item is None:
            return await self.app(scope, receive, send)
        common = [(b"etag", item.etag.encode()), (b"cache-control", item.cache_control.encode()), (b"vary", b"Accept-Encoding")]
        if item.etag in [t.strip() for t in headers.get("if-none-match", "").split(",")]:
            await send({"type": "http.response.start", "status": 304, "headers": common})
            await send({"type": "http.response.body", "body": b""})
            return
        encoded = [(b"content-encoding", item.encoding.encode())] if item.encoding != "identity" else []
        await send({"type": "http.response.start", "status": 200, "headers": common + encoded + [
            (b"content-type", item.media_type.encode()), (b"content-length", str(len(item.body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else item.body})


def middleware() -> list:
    """``launch(app_kwargs={"middleware": middleware()})``; empty when gradio_rerun is missing."""
    try:
        rerun_component()
    except ImportError:
        return []
    from starlette.middleware import Middleware

    return [Middleware(PrecompressedAssets)]
