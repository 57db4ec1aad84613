"""atheris harness. The unary envelope: wire.unframe/decode_reply/decode_call/decode_uvarint and the stream
reader (frames, multistream-select) on a fake stream.

Run (see README.md): `.venv/bin/python tests/fuzz/fuzz_envelope.py tests/fuzz/corpus/envelope -runs=1000000`
"""

from __future__ import annotations

if __name__ == "__main__":
    from _runner import run

    run("check_envelope")
