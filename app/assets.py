"""The embedded Rerun viewer's 70 MB JavaScript bundle (the wasm viewer inlined as base64), served
from a compressed copy made once, with an ETag.

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

No gradio import at module level (the middleware is plain ASGI)."""

from __future__ import annotations

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
ROUTE = re.compile(r"/custom_component/(?P<id>[0-9a-f]{64})/client/(?P<path>component/[A-Za-z0-9_.-]+\.(?:js|css))$")
MIN_SIZE = 1 << 20  # only files this big are worth a stored copy


@dataclass
class Compressed:
    body: bytes
    etag: str
    encoding: str
    media_type: str


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
    (once per file and encoding; a second caller waits for the first) and stored on disk."""

    def __init__(self, template_dir: Path, cache_dir: Path | None = DEFAULT_CACHE) -> None:
        self.template_dir = Path(template_dir).resolve()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._lock = threading.Lock()
        self._done: dict[tuple[str, str], Compressed | None] = {}
        self._busy: dict[tuple[str, str], threading.Event] = {}

    def file(self, rel: str) -> Path | None:
        p = (self.template_dir / rel).resolve()
        if self.template_dir not in p.parents or not p.is_file() or p.stat().st_size < MIN_SIZE:
            return None
        return p

    def get(self, rel: str, encoding: str) -> Compressed | None:
        """The ``encoding`` ("br" or "gzip") copy of ``rel``, or None (no such big file)."""
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
        src = self.file(rel)
        if src is None:
            return None
        st = src.stat()
        tag = hashlib.sha256(f"{src}|{st.st_size}|{st.st_mtime_ns}|{encoding}".encode()).hexdigest()[:24]
        media = "text/css" if src.suffix == ".css" else "text/javascript; charset=utf-8"
        stored = self.cache_dir / f"{src.stem}-{tag}.{encoding}" if self.cache_dir is not None else None
        if stored is not None and stored.is_file():
            return Compressed(stored.read_bytes(), f'"{tag}"', encoding, media)
        data = src.read_bytes()
        if encoding == "br":
            import brotli

            body = brotli.compress(data, quality=5)
        else:
            body = gzip.compress(data, 6, mtime=0)
        if stored is not None:
            try:
                stored.parent.mkdir(parents=True, exist_ok=True)
                tmp = stored.with_name(f".{stored.name}.{os.getpid()}.tmp")
                tmp.write_bytes(body)
                tmp.replace(stored)
            except OSError:  # a read-only checkout: served from memory only
                pass
        return Compressed(body, f'"{tag}"', encoding, media)

    def warm(self, rel: str = "component/index.js", encoding: str = "br") -> threading.Thread:
        """Make the copy in a background thread (at start, before the first page asks for it)."""
        th = threading.Thread(target=self.get, args=(rel, encoding), daemon=True, name="vipa-assets")
        th.start()
        return th


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
    """ASGI middleware: GET of the Rerun component's big bundle files -> the stored compressed copy
    (304 when the browser's ETag matches); anything else -> the wrapped app."""

    def __init__(self, app: Any, component_id: str | None = None, template_dir: Path | None = None,
                 cache_dir: Path | None = DEFAULT_CACHE, warm: bool = True) -> None:
        self.app = app
        if component_id is None or template_dir is None:
            component_id, template_dir = rerun_component()
        self.component_id = component_id
        self.store = AssetStore(template_dir, cache_dir)
        if warm:
            self.store.warm()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        m = ROUTE.search(scope.get("path", ""))
        if m is None or m.group("id") != self.component_id:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        accept = headers.get("accept-encoding", "")
        encoding = "br" if _accepts(accept, "br") else "gzip" if _accepts(accept, "gzip") else None
        if encoding is None or self.store.file(m.group("path")) is None:
            return await self.app(scope, receive, send)
        import anyio

        item = await anyio.to_thread.run_sync(self.store.get, m.group("path"), encoding)
        if item is None:
            return await self.app(scope, receive, send)
        common = [(b"etag", item.etag.encode()), (b"cache-control", b"no-cache"), (b"vary", b"Accept-Encoding")]
        if item.etag in [t.strip() for t in headers.get("if-none-match", "").split(",")]:
            await send({"type": "http.response.start", "status": 304, "headers": common})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": common + [
            (b"content-type", item.media_type.encode()), (b"content-encoding", item.encoding.encode()),
            (b"content-length", str(len(item.body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else item.body})


def middleware() -> list:
    """``launch(app_kwargs={"middleware": middleware()})``; empty when gradio_rerun is missing."""
    try:
        rerun_component()
    except ImportError:
        return []
    from starlette.middleware import Middleware

    return [Middleware(PrecompressedAssets)]
