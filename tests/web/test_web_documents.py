"""Pre-encoded documents (gzip, ETag, 304) and the shared "newest crawls" read behind every page."""

from __future__ import annotations

import gzip
import json

import pytest
from factories import make_snapshot
from web_harness import NOW, SWARM, LiveApp, build_store

from monitor.config import Config
from monitor.store.sqlite import Store, StoreWriter
from monitor.web import create_app
from monitor.web.documents import accepts_gzip, etag_matches, make_document


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, GZIP;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, *", False),
        ("*", True),
        ("br", False),
        ("gzip;q=nonsense", False),
    ],
)
def test_accepts_gzip(header, expected):
    assert accepts_gzip(header) is expected


def test_etag_matches():
    doc = make_document("{}" * 1000, "application/json")
    assert doc.etag.startswith('"') and doc.etag.endswith('"')
    assert etag_matches(doc.etag, doc.etag)
    assert etag_matches(f'"other", W/{doc.etag}', doc.etag)
    assert etag_matches("*", doc.etag)
    assert not etag_matches('"other"', doc.etag)
    assert not etag_matches(None, doc.etag)
    assert doc.content_type == "application/json; charset=utf-8"
    assert gzip.decompress(doc.gzipped) == doc.body


def test_small_documents_are_not_gzipped():
    assert make_document("{}", "application/json").gzipped is None


class CountingStore(Store):
    """A real store that counts how often the web asks which swarms exist (once per heads read)."""

    heads_reads = 0

    def swarms(self) -> list[str]:
        CountingStore.heads_reads += 1
        return super().swarms()


@pytest.fixture
def served(tmp_path):
    fx = build_store(tmp_path / "monitor.db")
    store = CountingStore(fx.path, create=False)
    live = LiveApp(lambda: create_app(Config(), store=store, clock=lambda: NOW))
    yield fx, live, store
    live.close()
    store.close()


def header(reply, name: str) -> str | None:
    """Header names are case-insensitive (aiohttp sends ``Etag``)."""
    return {k.lower(): v for k, v in reply.headers.items()}.get(name.lower())


def test_state_gzip_etag_and_304(served):
    fx, live, _store = served
    path = f"/api/v1/state?swarm={SWARM}"
    plain = live.get(path, headers={"Accept-Encoding": "identity"})
    packed = live.get(path, headers={"Accept-Encoding": "gzip, deflate"})
    assert plain.status == packed.status == 200
    assert header(plain, "Content-Encoding") is None and header(packed, "Content-Encoding") == "gzip"
    assert int(header(packed, "Content-Length")) < int(header(plain, "Content-Length")) / 3
    assert header(packed, "Vary") == "Accept-Encoding"
    etag = header(plain, "ETag")
    assert etag and header(packed, "ETag") == etag
    # the test client decompresses transparently: same document either way
    assert json.loads(packed.body) == json.loads(plain.body)
    again = live.get(path, headers={"If-None-Match": etag})
    assert again.status == 304 and again.body == b"" and header(again, "ETag") == etag
    assert live.get(path, headers={"If-None-Match": '"stale"'}).status == 200
    for page in ("/", "/api/v1/swarms", "/metrics", f"/api/v1/models/{fx.snapshots[-1].models[0].model.dht_prefix}"):
        first = live.get(page)
        assert first.status == 200 and header(first, "ETag"), page
        assert live.get(page, headers={"If-None-Match": header(first, "ETag")}).status == 304, page


def test_a_new_crawl_shows_on_the_next_request(served):
    """No staleness window: the change watch sees a commit made by another connection at once."""
    fx, live, _store = served
    before = live.get(f"/api/v1/state?swarm={SWARM}").json()
    assert before["crawl_id"] == fx.crawl_ids[-1]
    with StoreWriter(fx.path) as writer:
        new_id = writer.write_snapshot(make_snapshot(SWARM, t=NOW - 1, seed=5, hostile=False)).id
    after = live.get(f"/api/v1/state?swarm={SWARM}")
    assert after.json()["crawl_id"] == new_id
    assert live.get("/healthz").json()["swarms"][SWARM]["last_crawl_id"] == new_id
    with StoreWriter(fx.path) as writer:
        running = writer.begin_crawl(SWARM, NOW)
    assert live.get("/healthz").json()["swarms"][SWARM] == {
        "last_crawl_id": running,
        "last_crawl_status": "started",
        "last_success_at": after.json()["last_updated"],
        "stale": False,
    }


def test_unchanged_store_is_not_read_again(served):
    _fx, live, _store = served
    live.get("/api/v1/state")
    reads = CountingStore.heads_reads
    replies = live.gather([f"/api/v1/state?swarm={SWARM}"] * 50 + ["/"] * 20 + ["/healthz"] * 20)
    assert all(r.status == 200 for r in replies)
    assert CountingStore.heads_reads == reads  # the file did not change: every request answered from memory
