"""dht.peerid: the text and binary PeerID checks that guard what strangers send us."""

from __future__ import annotations

import base58

from dht.peerid import is_peer_id, is_peer_id_bytes, peer_id_text

ED25519 = "12D3KooWD4DGWPgr6GLXxifDvNnm9fyzfBmtKMpUxS8sNNhrZuw8"
SHA256 = "QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY"


def test_binary_form_of_real_peer_ids_is_accepted():
    for text in (ED25519, SHA256):
        raw = base58.b58decode(text)
        assert is_peer_id_bytes(raw) and is_peer_id(text)
        assert peer_id_text(raw) == text


def test_malformed_binary_peer_ids_are_refused():
    good = base58.b58decode(SHA256)
    for bad in (b"", b"\x12", good[:-1], good + b"\x00", b"\x13" + good[1:], b"\x00\x00", b"\x00\x41" + b"k" * 65):
        assert not is_peer_id_bytes(bad), bad
        assert peer_id_text(bad) is None
    assert not is_peer_id_bytes(SHA256)  # text is not the binary form
