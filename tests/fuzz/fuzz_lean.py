"""atheris harness. The lean transport's framing after a valid handshake: yamux frames in Noise transport messages cut
into socket reads, raw Noise transport and handshake messages, the identity payload, multistream lines.

Run (see README.md): `.venv/bin/python tests/fuzz/fuzz_lean.py tests/fuzz/corpus/lean -runs=1000000`
"""

from __future__ import annotations

if __name__ == "__main__":
    from _runner import run

    run("check_lean", module="lean_targets")
