"""compute_spans with Petals' exact rules (PROTOCOL.md §6.6), on hand-made records."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.rules.spans import compute_spans, records_by_block
from monitor.snapshot import PETALS_JOINING, PETALS_OFFLINE, PETALS_ONLINE, ServerInfo, ServerRecord

A = "12D3KooWD4DGWPgr6GLXxifDvNnm9fyzfBmtKMpUxS8sNNhrZuw8"
B = "12D3KooWL8pFAAemHvuV33PomCwHh6E6Ea5Fuu83gomgWLrmBErx"
T = 1_000.0


def rec(peer: str, block: int, state: int = PETALS_ONLINE, expiration: float = T + 240, **info) -> ServerRecord:
    return ServerRecord("m", block, peer, ServerInfo(state=state, throughput=1.0, **info), expiration)


def spans_of(records, num_blocks=8, min_state=PETALS_OFFLINE):
    return {peer: (s.start, s.end, s.state) for peer, s in compute_spans(records, num_blocks, min_state).items()}


def test_contiguous_blocks_make_one_span():
    assert spans_of([rec(A, 1), rec(A, 2), rec(A, 3)]) == {A: (1, 4, PETALS_ONLINE)}


def test_same_state_extends_over_gaps_like_petals():
    # Petals only does end = max(end, i + 1): a missing block in between does not split the span.
    assert spans_of([rec(A, 0), rec(A, 5)]) == {A: (0, 6, PETALS_ONLINE)}


def test_higher_state_starts_a_new_span_and_lower_is_ignored():
    records = [rec(A, 0, PETALS_JOINING), rec(A, 1, PETALS_JOINING), rec(A, 3), rec(A, 4), rec(A, 6, PETALS_OFFLINE)]
    assert spans_of(records) == {A: (3, 5, PETALS_ONLINE)}


def test_announced_range_overrides_and_wins_over_missing_blocks():
    # Only block 2 was found, but the server says it holds [0, 6): the announced range wins.
    assert spans_of([rec(A, 2, start_block=0, end_block=6)]) == {A: (0, 6, PETALS_ONLINE)}


def test_announced_range_is_clipped_to_the_model():
    assert spans_of([rec(A, 1, start_block=0, end_block=100)], num_blocks=4) == {A: (0, 4, PETALS_ONLINE)}
    # Petals would give end < start here; we clip to an empty span.
    assert spans_of([rec(A, 1, start_block=10, end_block=20)], num_blocks=4) == {A: (4, 4, PETALS_ONLINE)}


def test_only_start_block_set_does_not_override():
    assert spans_of([rec(A, 2, start_block=0), rec(A, 3, start_block=0)]) == {A: (2, 4, PETALS_ONLINE)}


def test_min_state_filters_servers():
    records = [rec(A, 0, PETALS_OFFLINE), rec(B, 0, PETALS_JOINING)]
    assert spans_of(records, min_state=PETALS_JOINING) == {B: (0, 1, PETALS_JOINING)}
    assert spans_of(records, min_state=PETALS_OFFLINE) == {A: (0, 1, PETALS_OFFLINE), B: (0, 1, PETALS_JOINING)}


def test_blocks_outside_the_model_are_ignored():
    assert spans_of([rec(A, 9), rec(A, -1)], num_blocks=8) == {}


def test_duplicate_entry_latest_expiration_wins():
    old = rec(A, 0, PETALS_ONLINE, expiration=T + 10)
    new = rec(A, 0, PETALS_OFFLINE, expiration=T + 200)
    assert records_by_block([old, new], 1)[0][A] is new
    assert records_by_block([new, old], 1)[0][A] is new
    span = compute_spans([old, new], 1)[A]
    assert span.state == PETALS_OFFLINE and span.expiration == T + 200


def test_span_keeps_the_defining_server_info_and_latest_expiration():
    first = rec(A, 0, expiration=T + 100, public_name="first")
    second = rec(A, 1, expiration=T + 300, public_name="second")
    span = compute_spans([first, second], 4)[A]
    assert span.info.public_name == "first"
    assert span.expiration == T + 300
    assert span.length == 2


def test_order_of_input_does_not_matter():
    records = [rec(B, 1), rec(A, 0, PETALS_JOINING), rec(A, 1), rec(B, 2, PETALS_OFFLINE), rec(A, 2)]
    assert spans_of(records) == spans_of(list(reversed(records)))


_peers = st.sampled_from([A, B, "QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY"])
_bounds = st.none() | st.integers(0, 20)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 12),
    st.lists(st.tuples(_peers, st.integers(0, 14), st.integers(0, 2), _bounds, _bounds), max_size=30),
)
def test_spans_stay_inside_the_model(num_blocks, raw):
    unique = {(peer, block): (state, start, end) for peer, block, state, start, end in reversed(raw)}
    records = []
    for (peer, block), (state, start, end) in unique.items():
        if start is not None and end is not None and end <= start:
            end = None
        records.append(rec(peer, block, state, start_block=start, end_block=end))
    spans = compute_spans(records, num_blocks)
    for span in spans.values():
        assert 0 <= span.start <= span.end <= num_blocks
    # a peer gets a span iff it has a record inside the model, and the span state is its highest state there
    inside = [r for r in records if r.block < num_blocks]
    assert set(spans) == {r.peer_id for r in inside}
    for peer, span in spans.items():
        assert span.state == max(r.info.state for r in inside if r.peer_id == peer)
