"""atheris harness. The DHT protobufs: every protocol.parse_* (requests and responses, rpc_info) and
HivemindDHT.handle_response for ping/store/find.

Run (see README.md): `.venv/bin/python tests/fuzz/fuzz_protobuf.py tests/fuzz/corpus/protobuf -runs=1000000`
"""

from __future__ import annotations

if __name__ == "__main__":
    from _runner import run

    run("check_protobuf")
