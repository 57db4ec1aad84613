"""What a commit tells the replicas' change watches: small payloads, and nothing but our own shapes read back."""

from __future__ import annotations

from monitor.store.notices import (
    ALERT_IDS_PER_NOTICE,
    MAX_PAYLOAD_BYTES,
    Notice,
    alert_notices,
    crawl_notice,
    parse_notice,
)


def test_notices_round_trip_and_stay_under_postgresqls_payload_limit():
    assert parse_notice(crawl_notice(7, "public", "succeeded")) == Notice(crawl=(7, "public", "succeeded"))
    biggest = [2**63 - 1 - i for i in range(2 * ALERT_IDS_PER_NOTICE + 1)]
    payloads = alert_notices(biggest)
    assert len(payloads) == 3 and max(len(p.encode()) for p in payloads) <= MAX_PAYLOAD_BYTES
    assert [i for p in payloads for i in parse_notice(p).alert_ids] == biggest
    assert alert_notices([]) == []
    long_name = crawl_notice(1, "é" * 5000, "failed")  # not a name the config allows, and still small
    assert long_name.isascii() and len(long_name) < 2000


def test_anything_else_on_the_channel_is_ignored():
    for payload in (
        "",
        "not json",
        "[1, 2]",
        '{"crawl": [0, "s", "succeeded"]}',
        '{"crawl": [true, "s", "succeeded"]}',
        '{"crawl": [1.5, "s", "succeeded"]}',
        '{"crawl": [1, 2, "succeeded"]}',
        '{"crawl": [1, "s"]}',
        '{"alerts": []}',
        '{"alerts": [1, "2"]}',
        '{"alerts": [-1]}',
        f'{{"alerts": [{2**63}]}}',
        f'{{"alerts": [{",".join(["1"] * (ALERT_IDS_PER_NOTICE + 1))}]}}',
        "x" * (MAX_PAYLOAD_BYTES + 1),
        "[" * 3999 + "]" * 3999,  # nested too deep for json.loads: RecursionError
        '{"alerts": ' + "[" * 3990 + "]" * 3990 + "}",
    ):
        assert parse_notice(payload) is None, payload
