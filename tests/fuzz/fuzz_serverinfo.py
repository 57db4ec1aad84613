"""atheris harness. Petals records: parse_server_info, parse_model_info, PeerID and block-key checks, and the rule chain
(classify_entries, build_snapshot, strict-JSON state document) on a RawCrawl built from the bytes.

Run (see README.md): `.venv/bin/python tests/fuzz/fuzz_serverinfo.py tests/fuzz/corpus/serverinfo -runs=1000000`
"""

from __future__ import annotations

if __name__ == "__main__":
    from _runner import run

    run("check_serverinfo")
