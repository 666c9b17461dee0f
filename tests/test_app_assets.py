"""The viewer bundle is answered from a stored compressed copy with an ETag (app/assets.py): the
body decompresses to the file, a matching If-None-Match gets 304, the copy is made once and kept
on disk, and every other request goes to the app untouched. A bundle with the wasm inlined is
served split: the module without it, and the wasm as its own immutable file that the module
compiles straight from its fetch."""

from __future__ import annotations

import asyncio
import gzip
import os

import pytest

from app.assets import PrecompressedAssets, middleware, preload_link

CID = "ab" * 32


def call(mw, path: str, headers: dict[str, str], method: str = "GET") -> tuple[int, dict, bytes]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(mw(scope, receive, send))
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, b"".join(
        m.get("body", b"") for m in sent[1:])


async def inner_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-inner", b"1")]})
    await send({"type": "http.response.body", "body": b"from the app"})


@pytest.fixture
def bundle(tmp_path):
    tdir = tmp_path / "templates"
    (tdir / "component").mkdir(parents=True)
    data = (b"const wasm = 'data:application/wasm;base64," + os.urandom(300_000).hex().encode() + b"';\n") * 4
    (tdir / "component" / "index.js").write_bytes(data)
    (tdir / "component" / "small.js").write_bytes(b"export {};\n")
    return tdir, data


def test_bundle_is_served_compressed_with_an_etag_and_304_on_revalidation(bundle, tmp_path):
    brotli = pytest.importorskip("brotli")
    tdir, data = bundle
    cache = tmp_path / "cache"
    mw = PrecompressedAssets(inner_app, CID, tdir, cache, warm=False)
    path = f"/gradio_api/custom_component/{CID}/client/component/index.js"
    status, h, body = call(mw, path, {"Accept-Encoding": "gzip, deflate, br"})
    assert status == 200 and h["content-encoding"] == "br" and int(h["content-length"]) == len(body)
    assert brotli.decompress(body) == data and len(body) < len(data) / 1.5
    assert h["cache-control"] == "no-cache" and h["etag"].startswith('"') and "javascript" in h["content-type"]
    assert [p.suffix for p in cache.iterdir() if p.suffix != ".txt"] == [".br"]  # kept for the next start
    status, h2, body = call(mw, path, {"Accept-Encoding": "br", "If-None-Match": h["etag"]})
    assert status == 304 and body == b"" and h2["etag"] == h["etag"]
    # a browser without brotli gets gzip; one with neither gets the app's own answer
    status, h3, body = call(mw, path, {"Accept-Encoding": "gzip"})
    assert h3["content-encoding"] == "gzip" and gzip.decompress(body) == data
    assert call(mw, path, {"Accept-Encoding": "br;q=0, identity"})[1].get("x-inner") == "1"
    # a fresh middleware (the next start) reads the stored copy: same ETag
    again = PrecompressedAssets(inner_app, CID, tdir, cache, warm=False)
    assert call(again, path, {"Accept-Encoding": "br"})[1]["etag"] == h["etag"]


def test_other_requests_go_to_the_app(bundle, tmp_path):
    tdir, _ = bundle
    mw = PrecompressedAssets(inner_app, CID, tdir, tmp_path / "cache", warm=False)
    enc = {"Accept-Encoding": "br, gzip"}
    for path in (f"/gradio_api/custom_component/{CID}/client/component/small.js",  # small: the app compresses it
                 f"/gradio_api/custom_component/{CID}/client/component/vipa-warm.js",  # bundle not split: no warm-up
                 f"/gradio_api/custom_component/{'cd' * 32}/client/component/index.js",  # another component
                 f"/gradio_api/custom_component/{CID}/client/component/../../../../etc/passwd",
                 "/config", "/"):
        status, h, body = call(mw, path, enc)
        assert h.get("x-inner") == "1" and body == b"from the app", path
    assert call(mw, f"/gradio_api/custom_component/{CID}/client/component/index.js", enc, "POST")[1].get("x-inner")


def test_the_page_preloads_the_bundle_and_launch_installs_the_middleware():
    pytest.importorskip("gradio_rerun")
    from gradio_rerun import Rerun

    link = preload_link()
    assert 'rel="modulepreload"' in link and f"/custom_component/{Rerun.get_component_class_id()}/" in link
    assert [m.cls for m in middleware()] == [PrecompressedAssets]


WRAPPER_JS = """async function ND(A) {
  return (await import("./re_viewer-Ab1.js")).default;
}
async function hD(A, I) {
  (!tI || !eI) && ([tI, eI] = await Promise.all([
    ND(),
    WebAssembly.compileStreaming(MD(A, I))
  ]));
}
async function MD(A, I) {
  const g = A ? new URL("./re_viewer_bg.wasm", A) : new URL("data:application/wasm;base64,%s", import.meta.url), B = await fetch(g);
  if (!B.ok)
    throw new Error(`Failed to fetch viewer Wasm: ${B.status} ${B.statusText}`);
  return iD(B, I);
}
"""


def test_a_bundle_with_inlined_wasm_is_served_as_module_plus_wasm_file(tmp_path):
    import base64

    brotli = pytest.importorskip("brotli")
    wasm = b"\0asm\x01\0\0\0" + os.urandom(1_200_000)
    tdir = tmp_path / "templates"
    (tdir / "component").mkdir(parents=True)
    (tdir / "component" / "index.js").write_bytes((WRAPPER_JS % base64.b64encode(wasm).decode()).encode())
    cache = tmp_path / "cache"
    mw = PrecompressedAssets(inner_app, CID, tdir, cache, warm=False)
    base = f"/gradio_api/custom_component/{CID}/client/component/"
    status, h, body = call(mw, base + "index.js", {"Accept-Encoding": "br"})
    js = brotli.decompress(body).decode()
    assert status == 200 and "base64" not in js and len(js) < 1000 and h["cache-control"] == "no-cache"
    name = js.split('new URL("./')[2].split('"')[0]
    assert name.startswith("re_viewer_bg-") and name.endswith(".wasm")
    assert "return B;" in js and "iD(B, I)" not in js  # compiled from the fetch itself (code cache)
    status, h, body = call(mw, base + name, {"Accept-Encoding": "gzip, br"})
    assert status == 200 and brotli.decompress(body) == wasm and h["content-type"] == "application/wasm"
    assert "immutable" in h["cache-control"]
    # no compression accepted: the split parts come as they are (the app has no such wasm file)
    status, h, body = call(mw, base + name, {})
    assert status == 200 and body == wasm and "content-encoding" not in h
    # another wasm name goes to the app
    assert call(mw, base + "re_viewer_bg-0000000000000000.wasm", {"Accept-Encoding": "br"})[1].get("x-inner") == "1"
    # the next start finds the split parts on disk (same name, same ETag) without splitting again
    again = PrecompressedAssets(inner_app, CID, tdir, cache, warm=False)
    assert again.store.wasm_name() == name
    assert call(again, base + "index.js", {"Accept-Encoding": "br"})[2] == call(mw, base + "index.js", {"Accept-Encoding": "br"})[2]
    assert again.store._split is None
    # the warm-up module names the same wasm and the glue module, and shares the bundle's promise
    status, h, body = call(mw, base + "vipa-warm.js", {"Accept-Encoding": "br"})
    assert status == 200 and "javascript" in h["content-type"] and "content-encoding" not in h
    assert f'new URL("./{name}"' in body.decode() and 'new URL("./re_viewer-Ab1.js"' in body.decode()
    assert "globalThis.__vipaViewerWasm ??=" in body.decode() and "globalThis.__vipaViewerWasm ??=" in js


def test_the_installed_viewer_bundle_can_be_split():
    """gradio_rerun's own bundle has the shape split_bundle rewrites (a new pin that changes it is
    noticed here, not by a slower page)."""
    pytest.importorskip("gradio_rerun")
    from app.assets import rerun_component, split_bundle

    _, tdir = rerun_component()
    sp = split_bundle((tdir / "component" / "index.js").read_bytes())
    assert sp is not None and sp.wasm[:4] == b"\0asm" and len(sp.js) < 1_000_000
    assert b"globalThis.__vipaViewerWasm ??= Promise.all(" in sp.js  # one compile per page
    assert sp.glue_name and f'import("./{sp.glue_name}")'.encode() in sp.js and (tdir / "component" / sp.glue_name).is_file()
