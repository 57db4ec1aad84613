"""A WAN on 127.0.0.1: one delaying TCP relay per swarm node, in a process of its own (``python -m bench.wan_relay``).

Kernel traffic shaping is not available on the benchmark machines, so every swarm node listens on a private port
and announces only its relay's port (hivemind's ``announce_maddrs``): every connection either crawler opens goes
through a relay and pays the round trip. Each direction of a connection is delayed by RTT/2: a chunk read at time
``t`` is written at ``t + RTT/2 (+ jitter)``, never earlier than the chunk before it (TCP keeps order), and not
before the bandwidth cap, if any, has let the previous chunks through: a timestamped queue per direction, never a
fixed sleep per chunk. TCP's own handshake costs a round trip before the dialler may send; a loopback connect
does not, so the first RTT of a connection holds its dialler's bytes back (release >= accepted + RTT + RTT/2).

Control: JSON lines on stdin, one JSON answer line each on stdout (the orchestrator owns the process):

- ``{"cmd": "add", "count": N}`` → ``{"pairs": [[relay_port, node_port], ...]}``: N relays listening, each
  forwarding to a node port picked free for the node to listen on;
- ``{"cmd": "shape", "rtt": s, "jitter": s, "bandwidth": bytes/s or 0}`` → ``{"ok": true}`` (new chunks only);
- ``{"cmd": "watch", "pid": P}`` → ``{"ok": true}``: connections made by P's process tree are P's (found from
  ``/proc``: the dialler's socket inode among the tree's descriptors), and any socket of the tree connected to a
  node port directly is a bypass;
- ``{"cmd": "usage", "pid": P, "windows": {name: [t0, t1]}}`` → per window (``time.time()``): connections P's
  tree opened through the relays, bytes it sent, bytes the swarm sent it, and the bypasses seen;
- ``{"cmd": "exit"}``.

Memory is bounded: at most ``MAX_BUFFERED`` bytes wait in one direction (reading pauses beyond), and at most
``MAX_EVENTS`` byte-count events are kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import trio

from .proctree import descendants

READ_SIZE = 256 * 1024
MAX_BUFFERED = 32 * 1024 * 1024  # per direction of one connection
MAX_EVENTS = 5_000_000
SCAN_EVERY = 0.2  # seconds between /proc scans while a process tree is watched
CONNECT_TIMEOUT = 10.0


@dataclass
class Shape:
    rtt: float = 0.0
    jitter: float = 0.0
    bandwidth: float = 0.0  # bytes per second per direction; 0 = unlimited


@dataclass
class Conn:
    cid: int
    client_port: int
    relay_port: int
    accepted: float  # time.time()
    opened: float  # trio clock, for the handshake's round trip
    owner: int | None = None  # the watched pid whose tree dialled it


@dataclass
class State:
    shape: Shape = field(default_factory=Shape)
    node_ports: dict[int, int] = field(default_factory=dict)  # relay port -> node port
    # (client port, relay port) -> its newest connection; go-libp2p dials from its listening port (reuseport), so
    # one client port has a connection to many relays at once
    conns: dict[tuple[int, int], Conn] = field(default_factory=dict)
    all_conns: list[Conn] = field(default_factory=list)
    events: list[tuple[float, int, int, int]] = field(default_factory=list)  # (time, cid, sent up, sent down)
    watched: set[int] = field(default_factory=set)
    bypasses: dict[int, set[str]] = field(default_factory=dict)  # watched pid -> "local->remote" seen
    scan_now: trio.Event = field(default_factory=trio.Event)


def release_times(arrival: float, size: int, last: float, shape: Shape, opened: float, first_hold: bool) -> float:
    """When a chunk read at ``arrival`` (trio clock) may be written: arrival + RTT/2 (+ jitter), in order, paced
    by the bandwidth cap; the dialler's bytes no earlier than a TCP handshake would have let them go."""
    start = max(arrival, opened + shape.rtt) if first_hold else arrival
    at = start + shape.rtt / 2 + (random.uniform(0, shape.jitter) if shape.jitter else 0.0)
    if shape.bandwidth:
        at = max(at, last + size / shape.bandwidth)
    return max(at, last)


async def _pump(src: trio.SocketStream, dst: trio.SocketStream, state: State, conn: Conn, up: bool) -> None:
    """Copy ``src`` to ``dst``, each chunk released at its own time (see :func:`release_times`)."""
    queue: deque[tuple[float, bytes]] = deque()
    buffered = 0
    opened = conn.opened
    have_data = trio.Event()
    room = trio.Event()
    done = False

    async def reader() -> None:
        nonlocal buffered, have_data, done
        last = 0.0
        try:
            while True:
                while buffered >= MAX_BUFFERED:
                    await room.wait()
                chunk = await src.receive_some(READ_SIZE)
                if not chunk:
                    break
                last = release_times(trio.current_time(), len(chunk), last, state.shape, opened, up)
                queue.append((last, chunk))
                buffered += len(chunk)
                if len(state.events) < MAX_EVENTS:
                    state.events.append((time.time(), conn.cid, len(chunk) if up else 0, 0 if up else len(chunk)))
                have_data.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            done = True
            have_data.set()

    async def writer() -> None:
        nonlocal buffered, have_data, room
        try:
            while True:
                if not queue:
                    if done:
                        break
                    await have_data.wait()
                    have_data = trio.Event()
                    continue
                at, chunk = queue[0]
                await trio.sleep_until(at)
                queue.popleft()
                buffered -= len(chunk)
                room.set()
                room = trio.Event()
                await dst.send_all(chunk)
            await dst.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            nursery.cancel_scope.cancel()  # the other end is gone: so is this direction

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(writer)


async def _serve(client: trio.SocketStream, relay_port: int, state: State, cid: int) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await _relay(client, relay_port, state, cid)  # either end may go away at any time: nothing to keep


async def _relay(client: trio.SocketStream, relay_port: int, state: State, cid: int) -> None:
    client_port = client.socket.getpeername()[1]
    conn = Conn(cid, client_port, relay_port, time.time(), trio.current_time())
    state.conns[(client_port, relay_port)] = conn
    state.all_conns.append(conn)
    if state.watched:
        state.scan_now.set()
    async with client:
        hold = trio.current_time() + state.shape.rtt  # a refused or silent node answers a round trip later
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                node = await trio.open_tcp_stream("127.0.0.1", state.node_ports[relay_port])
        except (OSError, trio.TooSlowError):
            await trio.sleep_until(hold)
            return
        async with node, trio.open_nursery() as nursery:
            nursery.start_soon(_pump, client, node, state, conn, True)
            nursery.start_soon(_pump, node, client, state, conn, False)


def _socket_table() -> dict[int, tuple[int, int]]:
    """inode -> (local port, remote port) of every IPv4/IPv6 TCP socket on 127.0.0.1 / ::1."""
    out: dict[int, tuple[int, int]] = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            local, remote, inode = parts[1], parts[2], int(parts[9])
            out[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
    return out


def _tree_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    for p in descendants(pid):
        try:
            names = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for name in names:
            try:
                target = os.readlink(f"/proc/{p}/fd/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def scan(state: State) -> None:
    """Attribute new connections to the watched trees; record any socket of theirs that reached a node directly."""
    table = _socket_table()
    node_ports = set(state.node_ports.values())
    for pid in list(state.watched):
        for inode in _tree_inodes(pid):
            ports = table.get(inode)
            if ports is None:
                continue
            local, remote = ports
            if remote in state.node_ports:
                conn = state.conns.get((local, remote))
                if conn is not None and conn.owner is None:
                    conn.owner = pid
            elif remote in node_ports:
                state.bypasses.setdefault(pid, set()).add(f"{local}->{remote}")


async def _scanner(state: State) -> None:
    while True:
        with trio.move_on_after(SCAN_EVERY):
            await state.scan_now.wait()
        state.scan_now = trio.Event()
        if state.watched:
            await trio.to_thread.run_sync(scan, state)


def usage(state: State, pid: int, windows: dict[str, list[float]]) -> dict[str, Any]:
    scan(state)
    mine = {c.cid for c in state.all_conns if c.owner == pid}
    out: dict[str, Any] = {"bypasses": sorted(state.bypasses.get(pid, set()))}
    for name, (t0, t1) in windows.items():
        up = down = 0
        for t, cid, u, d in state.events:
            if cid in mine and t0 <= t <= t1:
                up += u
                down += d
        opened = sum(1 for c in state.all_conns if c.owner == pid and t0 <= c.accepted <= t1)
        out[name] = {"connections": opened, "bytes_sent_by_crawler": up, "bytes_sent_by_swarm": down}
    return out


async def _listen(relay_port_sock: socket.socket, state: State, nursery: trio.Nursery, ids: list[int]) -> None:
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(relay_port_sock))
    port = relay_port_sock.getsockname()[1]
    async with listener:
        while True:
            client = await listener.accept()
            ids[0] += 1
            nursery.start_soon(_serve, client, port, state, ids[0])


_HANDED_OUT: set[int] = set()  # ports given to nodes in this process: never twice (go-libp2p binds with
# SO_REUSEPORT, so two nodes on one port would both bind and the kernel would split their connections)


def _free_port() -> int:
    """A free port for a node to listen on, below the kernel's ephemeral range: a port picked from that range
    can be taken by anyone's outgoing connection (go-libp2p's reuseport dials among them) before the node binds.
    Never one handed out before: the node it went to may not have bound it yet."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(1000):
        port = random.randrange(max(1024, low - 12000), low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port below the ephemeral range")


async def main_async() -> None:
    state = State()
    ids = [0]
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_scanner, state)
        buf = b""
        while True:
            chunk = await stdin.receive_some(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                answer = await _command(json.loads(line), state, nursery, ids)
                if answer is None:
                    nursery.cancel_scope.cancel()
                    return
                sys.stdout.write(json.dumps(answer) + "\n")
                sys.stdout.flush()
        nursery.cancel_scope.cancel()


async def _command(msg: dict[str, Any], state: State, nursery: trio.Nursery, ids: list[int]) -> dict | None:
    cmd = msg.get("cmd")
    if cmd == "add":
        pairs = []
        for _ in range(int(msg["count"])):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(512)
            relay_port, node_port = sock.getsockname()[1], _free_port()
            state.node_ports[relay_port] = node_port
            nursery.start_soon(_listen, sock, state, nursery, ids)
            pairs.append([relay_port, node_port])
        return {"pairs": pairs}
    if cmd == "shape":
        state.shape = Shape(float(msg.get("rtt", 0)), float(msg.get("jitter", 0)), float(msg.get("bandwidth", 0)))
        return {"ok": True}
    if cmd == "watch":
        state.watched.add(int(msg["pid"]))
        state.scan_now.set()
        return {"ok": True}
    if cmd == "usage":
        pid = int(msg["pid"])
        result = await trio.to_thread.run_sync(usage, state, pid, msg.get("windows", {}))
        state.watched.discard(pid)
        return result
    if cmd == "exit":
        return None
    return {"error": f"unknown command {cmd!r}"}


def main() -> int:
    trio.run(main_async)
    return 0


if __name__ == "__main__":
    sys.exit(main())
