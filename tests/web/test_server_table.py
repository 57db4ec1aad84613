"""The server table's filter and sort (``monitor.web.server_table``): the pure rules, then the model page and its
JSON twin driven by ``?q=&state=&version=&sort=&order=`` (no JavaScript needed), with hostile names escaped."""

from __future__ import annotations

import html as html_lib
import re

import pytest
from web_harness import SCRIPT, SWARM

from monitor.snapshot import PETALS_ONLINE, ServerInfo, ServerRow
from monitor.web import server_table
from monitor.web.params import ClientError
from monitor.web.server_table import TableQuery, apply, facets, parse, sort_links

PEERS = ["QmAlpha", "QmBravo", "QmCharlie", "QmDelta"]


def _row(peer: str, state: str, start: int, *, name=None, shown=True, version=None, throughput=1.0) -> ServerRow:
    info = ServerInfo(state=PETALS_ONLINE, throughput=throughput, public_name=name, version=version)
    return ServerRow(peer, state, start, start + 4, info, 0.0, 60.0, show_public_name=shown)


ROWS = [
    _row("QmDelta", "online", 0, name="alice.example", version="2.2.0", throughput=5.0),
    _row("QmBravo", "unreachable", 4, name="Bob", version="2.3.0.dev0", throughput=9.0),
    _row("QmCharlie", "online", 8, name="secret name", shown=False, version="2.2.0", throughput=None),
    _row("QmAlpha", "joining", 2, version=None, throughput=1.0),
]


def _peers(rows):
    return [r.peer_id for r in rows]


def test_default_is_every_row_by_span():
    assert _peers(apply(ROWS, parse({}))) == ["QmDelta", "QmAlpha", "QmBravo", "QmCharlie"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"state": "online"}, ["QmDelta", "QmCharlie"]),
        ({"version": "2.2.0"}, ["QmDelta", "QmCharlie"]),
        ({"version": "none"}, ["QmAlpha"]),
        ({"version": "9.9.9"}, []),
        ({"q": "ALICE"}, ["QmDelta"]),  # contributor, case-insensitive
        ({"q": "charlie"}, ["QmCharlie"]),  # peer id
        ({"q": "dev0"}, ["QmBravo"]),  # version
        ({"q": "secret"}, []),  # a name the table hides is not searchable either
        ({"q": "Qm", "state": "online", "version": "2.2.0"}, ["QmDelta", "QmCharlie"]),
    ],
)
def test_filters(query, expected):
    assert _peers(apply(ROWS, parse(query))) == expected


def test_sorts_by_any_column_both_ways_with_missing_values_last():
    assert _peers(apply(ROWS, parse({"sort": "throughput", "order": "desc"}))) == [
        "QmBravo",
        "QmDelta",
        "QmAlpha",
        "QmCharlie",  # no throughput: last in both orders
    ]
    assert _peers(apply(ROWS, parse({"sort": "throughput"}))) == ["QmAlpha", "QmDelta", "QmBravo", "QmCharlie"]
    assert _peers(apply(ROWS, parse({"sort": "peer_id", "order": "desc"}))) == sorted(PEERS, reverse=True)
    by_state = _peers(apply(ROWS, parse({"sort": "state"})))
    assert by_state == ["QmDelta", "QmCharlie", "QmAlpha", "QmBravo"]  # online, joining, unreachable; ties by span
    for column in server_table.SORT_KEYS:  # every column sorts without error
        for order in ("asc", "desc"):
            assert sorted(_peers(apply(ROWS, TableQuery(sort=column, order=order)))) == sorted(PEERS)


@pytest.mark.parametrize(
    "query", [{"state": "dead"}, {"sort": "nope"}, {"order": "up"}, {"q": "x" * (server_table.MAX_QUERY + 1)}]
)
def test_values_it_cannot_mean_are_a_400(query):
    with pytest.raises(ClientError):
        parse(query)


def test_empty_values_mean_no_filter_and_facets_list_what_is_there():
    assert parse({"q": " ", "state": "", "version": "", "sort": "", "order": ""}) == TableQuery()
    assert facets(ROWS) == {"states": ["online", "joining", "unreachable"], "versions": ["2.2.0", "2.3.0.dev0", "none"]}


def test_header_links_toggle_the_order_and_keep_the_filter():
    links = sort_links("/models/m", TableQuery(q="bob", sort="throughput"), {"swarm": "s", "at": None})
    assert links["throughput"] == "/models/m?swarm=s&q=bob&sort=throughput&order=desc"
    assert links["version"] == "/models/m?swarm=s&q=bob&sort=version&order=asc"
    assert links["span"] == "/models/m?swarm=s&q=bob"  # the default order needs no parameters


# ---- on the page and in its JSON twin


def _table_rows(page: str) -> list[tuple[str, bool]]:
    """(peer id, hidden) of each server row, in page order."""
    body = page.split('<table class="servers', 1)[1].split("</tbody>", 1)[0].split("<tbody>", 1)[1]
    row = r'<tr class="row-[a-z]+" data-row="[^"]*"( hidden)?>\s*<td[^>]*>.*?<td class="mono" data-value="([^"]+)"'
    rows = re.findall(row, body, re.S)
    return [(peer, bool(hidden)) for hidden, peer in rows]


def _table_peers(page: str) -> list[str]:
    """The rows the page shows, in order (the others are drawn hidden, for static/js/table.js)."""
    return [peer for peer, hidden in _table_rows(page) if not hidden]


def test_the_page_filters_and_sorts_without_javascript(live, fx):
    report = fx.snapshots[-1].models[0]
    base = f"/models/{report.model.dht_prefix}?swarm={SWARM}"
    page = live.get(base).text
    assert 'class="table-filter"' in page and 'name="q"' in page and 'name="state"' in page
    assert f'href="/models/{report.model.dht_prefix}?swarm={SWARM}&amp;sort=throughput&amp;order=asc"' in page
    assert len(_table_peers(page)) == len(report.servers)

    online = live.get(base + "&state=online").text
    expected = [r.peer_id for r in apply(report.servers, TableQuery(state="online"))]
    assert _table_peers(online) == expected and 0 < len(expected) < len(report.servers)
    assert f'role="status">{len(expected)} of {len(report.servers)} servers' in online
    # the rows filtered out follow, hidden and by span: what table.js shows when the filter changes in place
    rest = [r for r in sorted(report.servers, key=lambda r: (r.start, r.end, r.peer_id)) if r.state != "online"]
    assert _table_rows(online) == [(p, False) for p in expected] + [(r.peer_id, True) for r in rest]
    assert '<tr class="no-match" hidden>' in online
    assert 'class="table-count" role="status" hidden' not in online and 'table-clear" href' in online
    unfiltered = live.get(base).text
    assert 'role="status" hidden>' in unfiltered and '<a class="table-clear" href="' in unfiltered
    assert f'data-crawl="{fx.crawl_ids[-1]}"' in unfiltered
    assert f'data-json="/api/v1/models/{report.model.dht_prefix}?swarm={SWARM}"' in unfiltered

    by_peer = live.get(base + "&sort=peer_id&order=desc").text
    assert _table_peers(by_peer) == sorted((r.peer_id for r in report.servers), reverse=True)
    assert 'aria-sort="descending"' in by_peer

    nothing = live.get(base + "&q=no-such-server").text
    assert '<tr class="no-match"><td colspan="16" class="muted">No server matches this filter.' in nothing
    assert _table_peers(nothing) == [] and len(_table_rows(nothing)) == len(report.servers)
    assert live.get(base + "&sort=bogus").status == 400


def test_the_json_twin_takes_the_same_parameters(live, fx):
    report = fx.snapshots[-1].models[0]
    doc = live.get(f"/api/v1/models/{report.model.dht_prefix}?swarm={SWARM}&state=online&sort=ttl&order=desc").json()
    expected = apply(report.servers, TableQuery(state="online", sort="ttl", order="desc"))
    assert [r["peer_id"] for r in doc["model"]["server_rows"]] == [r.peer_id for r in expected]
    assert doc["server_table"] == {
        "q": "",
        "state": "online",
        "version": "",
        "sort": "ttl",
        "order": "desc",
        "matched": len(expected),
        "total": len(report.servers),
    }
    assert len(doc["model"]["blocks"]) == report.model.num_blocks  # coverage stays the whole model's
    bad = live.get(f"/api/v1/models/{report.model.dht_prefix}?order=sideways")
    assert bad.status == 400 and "order" in bad.json()["error"]["message"]


def test_what_the_client_typed_and_names_from_the_network_stay_text(live, fx):
    report = fx.snapshots[-1].models[0]
    page = live.get(f"/models/{report.model.dht_prefix}?swarm={SWARM}&q={SCRIPT}").text
    assert SCRIPT not in page
    assert f'value="{html_lib.escape(SCRIPT)}"' in page
    hostile_version = f"{SCRIPT}2.3"  # web_harness gives the first row this version: it is a facet
    page = live.get(f"/models/{report.model.dht_prefix}?swarm={SWARM}").text
    assert hostile_version not in page


def test_filtered_views_do_not_take_the_render_cache(live, fx):
    """Any text in ?q= is a new view: rendering it is fine, keeping it would evict the pages everyone shares."""
    from monitor.web.context import CTX

    cache = live.app[CTX].rendered
    prefix = fx.snapshots[-1].models[0].model.dht_prefix
    live.get(f"/models/{prefix}?swarm={SWARM}")
    live.get(f"/api/v1/models/{prefix}?swarm={SWARM}")
    kept = len(cache._items)
    for i in range(5):
        assert live.get(f"/models/{prefix}?swarm={SWARM}&q=x{i}").status == 200
        assert live.get(f"/api/v1/models/{prefix}?swarm={SWARM}&sort=ttl&q=y{i}").status == 200
    assert len(cache._items) == kept
    still = live.get(f"/models/{prefix}?swarm={SWARM}&live=0").text
    assert "live=0" in still and "live=0" not in live.get(f"/models/{prefix}?swarm={SWARM}").text
