"""Security of the web surface: inert untrusted strings, headers, CSP-clean pages, static files, no traces."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from web_harness import IMG, JS_URL, SCRIPT, SWARM

from monitor.web.middleware import CONTENT_SECURITY_POLICY
from monitor.web.templating import asset_dirs

TEMPLATES, STATIC = asset_dirs()


def _pages(fx) -> list[str]:
    snap = fx.snapshots[-1]
    row = snap.models[0].servers[0]
    return [
        "/",
        f"/models/{snap.models[0].model.dht_prefix}?swarm={SWARM}",
        f"/servers/{row.peer_id}",
        "/crawls",
        f"/crawls/{fx.crawl_ids[-1]}",
        f"/crawls/{fx.failed_id}",
        f"/crawls/{fx.crawl_ids[0]}/diff/{fx.crawl_ids[-1]}",
        "/api",
    ]


class _Elements(HTMLParser):
    """Every start tag with its attributes, as a browser would parse them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def elements(page: str) -> list[tuple[str, dict[str, str]]]:
    parser = _Elements()
    parser.feed(page)
    return parser.tags


def test_hostile_strings_are_inert_on_every_page(live, fx):
    for path in _pages(fx):
        page = live.get(path).text
        assert SCRIPT not in page and IMG not in page, path
        for tag, attrs in elements(page):
            assert not any(name.startswith("on") for name in attrs), (path, tag, attrs)
            assert "style" not in attrs, (path, tag)  # CSP forbids inline styles: none needed
            if tag == "script":
                assert attrs["src"] in ("/static/js/monitor.js", "/static/js/live.js", "/static/js/table.js"), path
                assert attrs == {"src": attrs["src"], "defer": ""}, path
            if tag == "img":
                assert attrs["src"].startswith("/static/"), path
            for name in ("href", "src", "action"):
                value = attrs.get(name, "").strip().lower()
                assert not value.startswith(("javascript:", "data:", "vbscript:")), (path, tag, attrs)


def test_hostile_public_name_version_and_adapters_render_as_text(live, fx):
    prefix = fx.snapshots[-1].models[0].model.dht_prefix
    page = live.get(f"/models/{prefix}?swarm={SWARM}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # public name and version, escaped
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # adapter, escaped, not a link
    assert 'href="https://huggingface.co/artek0chumak/guanaco-65b"' in page  # a real repo id is a link
    assert "https://huggingface.co/javascript" not in page
    assert JS_URL in page  # shown as text (public name of row 2 and an adapter) ...
    assert f'href="{JS_URL}' not in page  # ... never as a link


def test_security_headers_on_pages_api_static_and_errors(live):
    for path in ("/", "/api/v1/state", "/static/css/monitor.css", "/nope", "/api/v1/nope", "/metrics", "/healthz"):
        reply = live.get(path)
        h = reply.headers
        assert h["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
        csp = h["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert h["X-Content-Type-Options"] == "nosniff", path
        assert h["Referrer-Policy"] == "no-referrer", path
        assert h["X-Frame-Options"] == "DENY", path
        assert "aiohttp" not in h.get("Server", "").lower(), path


def test_api_allows_cross_origin_reads_like_the_official_monitor(live):
    assert live.get("/api/v1/state").headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Origin" not in live.get("/").headers


def test_static_files_are_served_and_traversal_is_refused(live):
    assert live.get("/static/js/monitor.js").status == 200
    assert live.get("/static/favicon.svg").status == 200
    secret = Path(STATIC).parent / "pyproject.toml"
    assert secret.exists()
    for path in (
        "/static/../pyproject.toml",
        "/static/%2e%2e/pyproject.toml",
        "/static/%2e%2e%2fpyproject.toml",
        "/static/..%2f..%2fpyproject.toml",
        "/static/css/../../pyproject.toml",
        "/static/%252e%252e/pyproject.toml",
        "/static//etc/passwd",
        "/static/",
        "/static/css/",
    ):
        reply = live.get(path)
        assert reply.status in (403, 404), (path, reply.status)
        assert "hatchling" not in reply.text and "root:" not in reply.text


def test_no_inline_script_or_style_in_templates():
    for template in Path(TEMPLATES).glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template
        assert " style=" not in text and "<style" not in text, template
        assert not re.search(r"\son[a-z]+=", text), template


def test_errors_never_leak_a_stack_trace(fx):
    class Exploding:
        def __getattr__(self, name):
            raise RuntimeError(f"secret detail {SCRIPT}")

    from web_harness import LiveApp

    from monitor.web import create_app

    app = LiveApp(lambda: create_app(None, store=Exploding()))
    try:
        for path in ("/", "/api/v1/state", "/crawls", "/healthz"):
            reply = app.get(path)
            assert reply.status == 500, path
            assert "secret detail" not in reply.text and "Traceback" not in reply.text, path
        assert app.get("/api/v1/state").json() == {"error": {"status": 500, "message": "Internal server error"}}
    finally:
        app.close()


def test_autoescape_is_on_for_every_template():
    from monitor.web.templating import make_environment

    env = make_environment(TEMPLATES)
    assert env.autoescape is True
    rendered = env.from_string("{{ x }}").render(x=SCRIPT)
    assert rendered == "&lt;script&gt;alert(1)&lt;/script&gt;"
