"""atheris harness. hivemind's msgpack dialect: serializer.loads (default and tight limits, unknown exts on/off), the
dumps round trip, and DictionaryValue.unpackb.

Run (see README.md): `.venv/bin/python tests/fuzz/fuzz_msgpack.py tests/fuzz/corpus/msgpack -runs=1000000`
"""

from __future__ import annotations

if __name__ == "__main__":
    from _runner import run

    run("check_msgpack")
