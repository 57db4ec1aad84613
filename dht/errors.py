"""Typed errors of the ``dht`` package: every failure a caller can see is one of these."""

from __future__ import annotations


class DHTError(Exception):
    """Base class for everything ``dht`` raises on purpose."""


class DecodeError(DHTError):
    """Bytes from the network (msgpack, protobuf, envelope) could not be decoded within our limits."""


class FrameError(DecodeError):
    """A uvarint-delimited envelope was truncated, oversize or malformed."""


class RemoteError(DHTError):
    """The peer answered with an error reply (``unaryResponse.error``: hivemind's repr of the exception)."""


class ProtocolNotSupported(RemoteError):
    """The peer refused the protocol ID in multistream negotiation (client-mode node, joining server)."""


class PeerUnreachable(DHTError):
    """We could not dial the peer or open a stream to it."""


class AddressLookupTimeout(PeerUnreachable):
    """Our own look-up of the peer's address (kad FIND_NODE) ran out of time, waiting for a slot or for the nodes
    we asked: evidence that we or they were busy, none about the peer itself (callers retry, never cache it)."""


class DialFailed(PeerUnreachable):
    """Dialling the peer failed at every address we had for it (refused, unreachable, no handshake): it may be
    down, or listening somewhere else now (a restarted server on a new port or IP)."""


class PeerIdentityError(PeerUnreachable):
    """The peer at the address did not prove the identity we dialled: a signature over its Noise key that does
    not verify, another peer's key, or no readable identity at all."""


class CallTimeout(DHTError):
    """The call did not complete within its deadline."""


class RequestIdError(DHTError):
    """``handle_response`` got a request id that is unknown or was already answered."""
