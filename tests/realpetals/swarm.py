"""A swarm of real Petals servers on 127.0.0.1, for tests and for ``make demo-petals``.

One ``petals.cli.run_dht`` bootstrap and any number of ``petals.cli.run_server`` processes, each serving a fixed
``--block_indices`` span of a tiny local Llama on CPU in float32, with a fixed identity (peer ids are known before
they start) and a numeric ``--throughput`` (no speed test). All run in the Petals venv (``petals_venv.py``) through
``launch.py``; this module itself imports nothing of Petals or hivemind, so it runs in the monitor's own venv.

Every process starts in a session of its own, so its process group holds whatever it forks (handler processes,
p2pd daemons). Stopping kills exactly those groups: a group is signalled only while its leader, our child, is not
yet reaped, so its id cannot have been reused by anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from petals_venv import offline_env

from bench._load_procs import rss_kb, wait_for

HERE = Path(__file__).resolve().parent
LAUNCH = HERE / "launch.py"
STARTED = re.compile(r"\] Started\s*$", re.M)
BOOT_ADDR = re.compile(r"(/ip4/127\.0\.0\.1/tcp/\d+/p2p/\w+)")


class SwarmError(RuntimeError):
    """A Petals process died or did not get ready in time (the message quotes the end of its log)."""


@dataclass(frozen=True)
class ServerSpec:
    name: str
    start: int
    end: int  # exclusive, as --block_indices
    throughput: float
    public_name: str = ""

    @property
    def block_indices(self) -> str:
        return f"{self.start}:{self.end}"


@dataclass
class PetalsProcess:
    name: str
    popen: subprocess.Popen
    log: Path
    peer_id: str
    spec: ServerSpec | None = None
    stopped: str | None = None  # "graceful" or "killed"
    stopped_at: float | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def leader_exited(self) -> bool:
        """True once our child has exited; it stays unreaped (a zombie) so its group id stays ours."""
        if self.popen.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def group_alive(self) -> bool:
        if self.popen.returncode is not None:
            return False  # reaped: the group id is no longer ours to signal
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def signal_group(self, sig: int) -> None:
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class PetalsSwarm:
    """Start with :meth:`start` (or as a context manager); :meth:`close` stops everything started."""

    python: Path
    workdir: Path
    model_dir: Path
    dht_prefix: str
    servers: Sequence[ServerSpec]
    update_period: float = 10.0
    num_handlers: int = 1
    ready_timeout: float = 180.0
    host: str = "127.0.0.1"
    boot_port: int = 0
    procs: dict[str, PetalsProcess] = field(default_factory=dict)
    initial_peer: str = ""

    # ---- facts

    @property
    def expiration(self) -> float:
        """How long a record lives after each announcement: petals' Server takes max(2 * update_period, 3 s)."""
        return max(2 * self.update_period, 3.0)

    @property
    def num_blocks(self) -> int:
        return json.loads((self.model_dir / "config.json").read_text())["num_hidden_layers"]

    def uncovered(self, specs: Sequence[ServerSpec] | None = None) -> list[int]:
        covered = {b for s in (self.servers if specs is None else specs) for b in range(s.start, s.end)}
        return [b for b in range(self.num_blocks) if b not in covered]

    def server(self, name: str) -> PetalsProcess:
        return self.procs[name]

    # ---- lifecycle

    def __enter__(self) -> PetalsSwarm:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _answer_of_helper(self, *args: str, timeout: float, grace: float = 20.0) -> str:
        """``launch.py`` for a helper that prints ONE line of JSON and may then hang at exit (a Petals client:
        hivemind's P2P finalizers, seen under load, and its DHT process can outlive it holding our pipe): the
        line is the answer, not the EOF. The helper runs in a session of its own, ended as a group (ours) once
        it has answered and ``grace`` seconds have passed, or at ``timeout``."""
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [str(self.python), str(LAUNCH), *args],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=offline_env(),
                cwd=self.workdir,
                start_new_session=True,
            )
            line: list[str] = []
            reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
            reader.start()
            reader.join(timeout)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace if line and line[0].strip() else 0.1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its session: the helper and whatever it started
            proc.wait()
            if not (line and line[0].strip()):
                err.seek(0)
                tail = err.read().decode(errors="replace")[-2000:]
                raise SwarmError(f"launch.py {args[0]} gave no answer within {timeout:g} s ({proc.returncode}): {tail}")
            return line[0]

    def _run_helper(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [str(self.python), str(LAUNCH), *args],
            capture_output=True,
            text=True,
            env=offline_env(),
            timeout=timeout,
            cwd=self.workdir,
        )
        if done.returncode != 0:
            raise SwarmError(f"launch.py {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def identities(self, names: Sequence[str]) -> dict[str, str]:
        """Peer ids of ``<workdir>/<name>.id`` (made when missing): the same files give the same ids next time."""
        out = self._run_helper("identities", *[str(self.workdir / f"{n}.id") for n in names])
        ids = json.loads(out)
        return {n: ids[str(self.workdir / f"{n}.id")] for n in names}

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not (self.model_dir / "config.json").exists():
            self._run_helper("make-model", str(self.model_dir), timeout=300)
        names = ["boot", *[s.name for s in self.servers]]
        self._ids = self.identities(names)
        self.boot_port = self.boot_port or free_port(self.host)
        self.initial_peer = f"/ip4/{self.host}/tcp/{self.boot_port}/p2p/{self._ids['boot']}"
        boot = self._spawn(
            "boot",
            [
                "petals.cli.run_dht",
                "--host_maddrs",
                f"/ip4/{self.host}/tcp/{self.boot_port}",
                "--identity_path",
                str(self.workdir / "boot.id"),
            ],
        )
        self._wait_log(boot, lambda text: self.initial_peer in text, "bootstrap up")
        for spec in self.servers:
            self.start_server(spec)
        for spec in self.servers:
            self.wait_started(spec.name)

    def start_server(self, spec: ServerSpec, *, load_gate: Path | None = None) -> PetalsProcess:
        """Start one ``run_server`` (does not wait). With ``load_gate``, it loads its blocks only once that file
        exists, so it stays JOINING until the test says so."""
        if spec.name not in getattr(self, "_ids", {}):
            self._ids.update(self.identities([spec.name]))
        args = [
            "petals.cli.run_server",
            str(self.model_dir),
            "--dht_prefix",
            self.dht_prefix,
            "--initial_peers",
            self.initial_peer,
            "--host_maddrs",
            f"/ip4/{self.host}/tcp/0",
            "--device",
            "cpu",
            "--torch_dtype",
            "float32",
            "--throughput",
            repr(float(spec.throughput)),
            "--block_indices",
            spec.block_indices,
            "--public_name",
            spec.public_name or spec.name,
            "--identity_path",
            str(self.workdir / f"{spec.name}.id"),
            "--update_period",
            repr(float(self.update_period)),
            "--num_handlers",
            str(self.num_handlers),
            "--inference_max_length",
            "512",
        ]
        env = {"REAL_PETALS_LOAD_GATE": str(load_gate)} if load_gate else {}
        return self._spawn(spec.name, args, spec=spec, extra_env=env)

    def wait_started(self, name: str, timeout: float | None = None) -> PetalsProcess:
        proc = self.procs[name]
        self._wait_log(proc, STARTED.search, f"server {name} Started", timeout)
        return proc

    def _spawn(
        self, name: str, args: list[str], *, spec: ServerSpec | None = None, extra_env: dict | None = None
    ) -> PetalsProcess:
        if name in self.procs and self.procs[name].popen.returncode is None:
            raise SwarmError(f"{name} is already running")
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                [str(self.python), str(LAUNCH), "run", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=offline_env({**os.environ, **(extra_env or {})}),
                start_new_session=True,
                cwd=self.workdir,
            )
        proc = PetalsProcess(name, popen, log, self._ids[name], spec)
        self.procs[name] = proc
        return proc

    def _wait_log(self, proc: PetalsProcess, seen: Callable[[str], object], what: str, timeout: float | None = None):
        def check():
            if proc.leader_exited():
                raise SwarmError(f"{proc.name} exited before {what}; end of {proc.log}:\n{proc.log_text()[-3000:]}")
            return seen(proc.log_text())

        try:
            return wait_for(check, timeout=timeout or self.ready_timeout, every=0.25, what=what)
        except RuntimeError as e:
            raise SwarmError(f"{e}; end of {proc.log}:\n{proc.log_text()[-3000:]}") from None

    def stop(self, name: str, *, kill: bool = False, grace: float = 30.0) -> None:
        """Graceful: SIGINT to the server (petals announces OFFLINE, then exits), then its group is ended.
        ``kill``: SIGKILL to the whole group at once, a crash that says nothing to the swarm."""
        self._stop_all([name], kill=kill, grace=grace)

    def close(self) -> None:
        """Stop every process this swarm started: the servers together, then the bootstrap."""
        try:
            self._stop_all([n for n in self.procs if n != "boot"], kill=False, grace=15.0)
        finally:  # a server that would not be reaped must not keep the bootstrap running
            self._stop_all([n for n in self.procs if n == "boot"], kill=False, grace=5.0)

    def _stop_all(self, names: Sequence[str], *, kill: bool, grace: float) -> None:
        procs = [self.procs[n] for n in names if self.procs[n].popen.returncode is None]
        for proc in procs:
            proc.stopped, proc.stopped_at = ("killed" if kill else "graceful"), time.time()
            if kill:
                proc.signal_group(signal.SIGKILL)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGINT)
        _wait_all(lambda: all(p.leader_exited() for p in procs), grace)
        for sig in (signal.SIGTERM, signal.SIGKILL):  # what is left of each group: handlers, p2pd daemons
            left = [p for p in procs if p.group_alive() and not _only_zombie_left(p)]
            for proc in left:
                proc.signal_group(sig)
            _wait_all(lambda left=left: all(_only_zombie_left(p) for p in left), 5.0)
        unreaped = []
        for proc in procs:
            try:
                proc.popen.wait(timeout=10)  # reaped last: until now the group id could not be reused
            except subprocess.TimeoutExpired:
                unreaped.append(proc.name)
        if unreaped:
            raise SwarmError(f"not reaped within 10 s of SIGKILL: {', '.join(unreaped)}")

    # ---- measurement

    def memory(self) -> tuple[int, int]:
        """(RSS, PSS) in bytes of every live process in the groups started, summed. RSS counts pages the processes
        share once per process (torch's libraries, the forked handlers); PSS splits them, so it adds up."""
        rss = pss = 0
        for proc in self.procs.values():
            if proc.popen.returncode is None:
                for pid in group_members(proc.pid, exclude_zombies=True):
                    rss += rss_kb(pid) * 1024
                    pss += _pss_bytes(pid)
        return rss, pss


def _wait_all(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.1)


def _only_zombie_left(proc: PetalsProcess) -> bool:
    """The group's only member is our exited, unreaped leader."""
    return proc.leader_exited() and not group_members(proc.pid, exclude_zombies=True)


def group_members(pgid: int, *, exclude_zombies: bool = False) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and not (exclude_zombies and state == "Z"):
            members.append(int(entry))
    return members


def _pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
