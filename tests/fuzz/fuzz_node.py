"""atheris harness. A DHT node's RPC handlers (ping / store / find, several requests per input), whose replies must pass
our own strict client parsers.

Run (see README.md): `.venv/bin/python tests/fuzz/fuzz_node.py tests/fuzz/corpus/node -runs=1000000`
"""

from __future__ import annotations

if __name__ == "__main__":
    from _runner import run

    run("check_node", module="lean_targets")
