"""Pytest plugin: real hivemind 1.1.12 DHT nodes in a subprocess, for interop tests.

Register it from ``tests/conftest.py`` with ``pytest_plugins = ["interop_fixtures"]``.
The harness script (``tests/hivemind_harness.py``) runs under ``.venv/bin/python`` in its own process
group; hivemind is never imported here (its protobufs clash with py-libp2p's).

Fixtures:
- ``hivemind_harness`` (session): one harness process, no nodes; torn down at session end. Modules that
  import the fixtures by name share that one process too.
- ``hivemind_swarm`` (session): two full nodes ``a`` and ``b`` (``b`` bootstraps from ``a``) on 127.0.0.1,
  plus a ``stand-in`` rpc_info handler on ``a``. Tests must use their own keys (the swarm is shared).

Every harness call has a deadline; a hung harness fails the test instead of hanging the session. From trio
tests use ``await harness.acall(...)`` so the event loop keeps serving while hivemind works.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tagged_json import from_json, to_json  # noqa: F401 (re-exported for interop tests)

REPO = Path(__file__).resolve().parent.parent
HARNESS_SCRIPT = Path(__file__).resolve().parent / "hivemind_harness.py"
START_TIMEOUT = 60.0  # importing hivemind + torch on a cold cache
CALL_TIMEOUT = 30.0
EXIT_TIMEOUT = 15.0

STANDIN_RPC_INFO = {"version": "2.3.0.dev2", "dht_client_mode": False, "cache_tokens_available": 4096}


class HarnessError(RuntimeError):
    """The harness answered a command with an error, died, or missed its deadline."""


def harness_python() -> str:
    venv_python = REPO / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


@dataclass(frozen=True)
class HivemindNodeInfo:
    name: str
    peer_id: str  # base58
    node_id: bytes  # 20-byte DHTID
    maddrs: list[str]  # each ends with /p2p/<peer_id>


class HivemindHarness:
    """One harness subprocess; ``call`` sends a command and waits for its reply with a deadline."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in close())
        self._proc = subprocess.Popen(
            [harness_python(), str(HARNESS_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=str(REPO),
            start_new_session=True,  # its own process group: teardown reaches p2pd grandchildren too
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._replies: queue.Queue[dict | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_replies, daemon=True)
        self._reader.start()
        self._next_id = 1
        self._lock = threading.Lock()
        self.nodes: dict[str, HivemindNodeInfo] = {}
        self._closed = False
        ready = self._wait_reply(0, START_TIMEOUT)
        if ready.get("result") != "ready":
            raise HarnessError(f"harness did not start: {ready}")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _read_replies(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self._replies.put(json.loads(line))
            except ValueError:
                continue
        self._replies.put(None)  # EOF: the harness is gone

    def _wait_reply(self, req_id: int, timeout: float) -> dict:
        try:
            reply = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise HarnessError(f"harness gave no reply within {timeout} s; log: {self.log_tail()}") from None
        if reply is None:
            raise HarnessError(f"harness exited; log: {self.log_tail()}")
        if reply.get("id") != req_id:
            raise HarnessError(f"reply for request {reply.get('id')}, expected {req_id}")
        return reply

    def call(self, cmd: str, *, timeout: float = CALL_TIMEOUT, **args: Any) -> Any:
        """Run one command; raise :class:`HarnessError` on an error reply, death or deadline."""
        with self._lock:
            req_id = self._next_id
            self._next_id += 1
            if self._proc.stdin is None or self._proc.poll() is not None:
                raise HarnessError(f"harness is not running; log: {self.log_tail()}")
            self._proc.stdin.write((json.dumps({"id": req_id, "cmd": cmd, **args}) + "\n").encode())
            self._proc.stdin.flush()
            reply = self._wait_reply(req_id, timeout)
        if not reply["ok"]:
            raise HarnessError(f"{cmd}: {reply['error']}")
        return reply["result"]

    async def acall(self, cmd: str, *, timeout: float = CALL_TIMEOUT, **args: Any) -> Any:
        """``call`` from a trio task, in a worker thread, so the trio loop keeps running."""
        import trio

        return await trio.to_thread.run_sync(lambda: self.call(cmd, timeout=timeout, **args))

    # ---- conveniences
    def start_node(self, name: str, **kwargs: Any) -> HivemindNodeInfo:
        info = self.call("start", name=name, timeout=START_TIMEOUT, **kwargs)
        node = HivemindNodeInfo(info["name"], info["peer_id"], bytes.fromhex(info["node_id"]), info["maddrs"])
        self.nodes[name] = node
        return node

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-limit:].decode(errors="replace")
        except OSError:
            return "<no log>"

    def close(self) -> None:
        """Ask the harness to stop its nodes; escalate to SIGTERM, then SIGKILL its process group. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._proc.poll() is None:
                with contextlib.suppress(HarnessError, OSError, ValueError):
                    self.call("exit", timeout=EXIT_TIMEOUT)
                try:
                    self._proc.wait(timeout=EXIT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGTERM)
                    try:
                        self._proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        self._signal_group(signal.SIGKILL)
                        self._proc.wait(timeout=5)
            # Children of our harness (hivemind DHT processes, p2pd) left behind after it exited.
            self._signal_group(signal.SIGKILL)
        finally:
            for stream in (self._proc.stdin, self._proc.stdout):
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()
            self._log.close()

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)  # the group we created with start_new_session


@contextlib.contextmanager
def running_harness() -> Iterator[HivemindHarness]:
    """A harness for the duration of the block, always torn down (scripts and one-off experiments)."""
    with tempfile.TemporaryDirectory(prefix="hivemind-harness-") as tmp:
        harness = HivemindHarness(Path(tmp) / "harness.log")
        try:
            yield harness
        finally:
            harness.close()


_SHARED: dict[str, HivemindHarness] = {}


def _hivemind_installed() -> bool:
    if harness_python() != sys.executable:
        return True  # the harness interpreter is another one; let it report for itself
    return importlib.util.find_spec("hivemind") is not None  # locates only: nothing is imported


@pytest.fixture(scope="session")
def hivemind_harness(request: pytest.FixtureRequest) -> HivemindHarness:
    """The ONE harness process of this test session.

    Shared through a module global, so test modules that import this fixture by name (instead of
    registering the plugin) still get the same process rather than one each.
    """
    harness = _SHARED.get("harness")
    if harness is None:
        if not _hivemind_installed():
            pytest.skip("hivemind is not installed in the harness interpreter")
        tmp = Path(tempfile.mkdtemp(prefix="hivemind-harness-"))
        harness = HivemindHarness(tmp / "harness.log")
        _SHARED["harness"] = harness

        def _teardown() -> None:
            _SHARED.pop("harness", None)
            harness.close()
            shutil.rmtree(tmp, ignore_errors=True)

        request.config.add_cleanup(_teardown)
    return harness


@pytest.fixture(scope="session")
def hivemind_swarm(hivemind_harness: HivemindHarness) -> HivemindHarness:
    """Full nodes ``a`` and ``b`` (b bootstrapped from a); ``a`` also serves a stand-in rpc_info."""
    if "a" not in hivemind_harness.nodes:
        hivemind_harness.start_node("a")
        hivemind_harness.start_node("b", initial_names=["a"])
        hivemind_harness.call("add_rpc_info", name="a", info=STANDIN_RPC_INFO)
    return hivemind_harness
