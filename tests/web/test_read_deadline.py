"""A store read has a deadline: past it the caller gets ReadTimeout (the web: 503) and the read is cut off, so the
read threads are free again. (The PostgreSQL case, a frozen backend, is in tests/monitor/test_store_postgres.py.)"""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from factories import T0, make_snapshot

from monitor.store.read_guard import ReadCall, ReadInterrupted, reading_for
from monitor.store.sqlite import Store, StoreWriter
from monitor.web.reader import ReadExecutor, ReadTimeout

WAIT = 60.0  # bound on every wait for another thread
# ~a minute of SQLite's time (bounded, so a failing run ends too)
LONG = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000000) SELECT count(*) FROM n"


def _long_read(store: Store, errors: list[Exception]) -> int:
    try:
        with store._read() as conn:
            return conn.execute(LONG).fetchone()[0]
    except Exception as e:
        errors.append(e)
        raise


@pytest.mark.timeout(300)
def test_a_read_past_its_deadline_is_interrupted_and_its_thread_serves_the_next(tmp_path):
    with StoreWriter(tmp_path / "m.db") as writer:
        writer.write_snapshot(make_snapshot("test", t=T0))

    async def main(store: Store) -> None:
        reads = ReadExecutor(store, workers=1, deadline=0.5)
        errors: list[Exception] = []
        try:
            with pytest.raises(ReadTimeout):
                await reads(_long_read, store, errors)
            async with asyncio.timeout(30):  # the only thread is free again: interrupted, not abandoned
                assert [c.swarm for c in await reads.read("crawls")] == ["test"]
            assert [str(e) for e in errors] == ["interrupted"]  # not merely done: SQLite stopped it
        finally:
            reads.close()

    with Store(tmp_path / "m.db", create=False) as store:
        asyncio.run(main(store))


def test_a_store_without_interrupt_still_gets_its_deadline():
    import threading

    release = threading.Event()

    class Stuck:  # a fake store whose read blocks until the test lets it go
        def crawls(self) -> list:
            release.wait(30)
            return []

    async def main() -> None:
        reads = ReadExecutor(Stuck(), workers=1, deadline=0.05)
        try:
            with pytest.raises(ReadTimeout):
                await reads.read("crawls")
        finally:
            release.set()
            reads.close()

    asyncio.run(main())


def test_an_interrupt_that_lands_during_begin_leaves_the_threads_next_read_alone(tmp_path):
    with StoreWriter(tmp_path / "m.db") as writer:
        writer.write_snapshot(make_snapshot("test", t=T0))
    store = Store(tmp_path / "m.db", create=False)
    call = ReadCall()

    class InterruptedAtBegin(sqlite3.Connection):
        """The thread's read connection, on which the web's deadline comes while BEGIN runs."""

        def execute(self, sql, *args):
            if sql == "BEGIN" and not hasattr(self, "hit"):
                self.hit = store.interrupt(call)
                raise sqlite3.OperationalError("interrupted")
            return super().execute(sql, *args)

    uri = f"{(tmp_path / 'm.db').resolve().as_uri()}?mode=ro"
    store._local.conn = sqlite3.connect(uri, uri=True, isolation_level=None, factory=InterruptedAtBegin)
    try:
        with reading_for(call), pytest.raises(sqlite3.OperationalError, match="interrupted"):
            store.swarms()
        assert store._local.conn.hit  # the read was cut off while in BEGIN
        assert not store._guard._busy  # and is over: its connection is not held as in use
        with reading_for(ReadCall()):
            assert store.swarms() == ["test"]  # the thread's next call (another request's) is not cut off too
    finally:
        store._local.conn.close()
        store.close()


def _paused_read(store: Store, paused: threading.Event, go_on: threading.Event) -> int:
    """A read whose statement is running (in an SQL function) until ``go_on``: an interrupt then cuts it."""

    def pause() -> int:
        paused.set()
        assert go_on.wait(WAIT)
        return 1

    with store._read() as conn:
        conn.create_function("pause", 0, pause)
        return conn.execute("SELECT pause() + count(*) FROM crawls").fetchone()[0]


def _cut_off_late(store: Store, before) -> None:
    """``store.interrupt`` runs ``before()`` first: what happens on the read thread as the deadline passes."""
    real = store.interrupt

    def interrupt(call: ReadCall) -> bool:
        before()
        return real(call)

    store.interrupt = interrupt


@pytest.mark.timeout(300)
def test_a_call_that_ended_as_its_deadline_passed_leaves_the_threads_next_call_alone(tmp_path):
    with StoreWriter(tmp_path / "m.db") as writer:
        writer.write_snapshot(make_snapshot("test", t=T0))
    release_a, b_paused, b_go_on = threading.Event(), threading.Event(), threading.Event()

    async def main(store: Store) -> None:
        reads = ReadExecutor(store, workers=1, deadline=0.2)

        def late() -> None:  # call A ends, and B (queued behind it) is in its read, before the interrupt
            release_a.set()
            assert b_paused.wait(WAIT)
            b_go_on.set()

        _cut_off_late(store, late)
        try:
            a = asyncio.ensure_future(reads(release_a.wait, WAIT))
            await asyncio.sleep(0)  # A has taken its deadline (0.2 s)
            reads.deadline = WAIT
            b = asyncio.ensure_future(reads(_paused_read, store, b_paused, b_go_on))
            with pytest.raises(ReadTimeout):
                await a
            assert await b == 2  # B was not cut off for A
        finally:
            reads.close()

    with Store(tmp_path / "m.db", create=False) as store:
        asyncio.run(main(store))


@pytest.mark.timeout(300)
def test_a_call_cut_off_between_two_reads_makes_no_further_read(tmp_path):
    with StoreWriter(tmp_path / "m.db") as writer:
        writer.write_snapshot(make_snapshot("test", t=T0))
    between, go_on, ended = threading.Event(), threading.Event(), threading.Event()
    outcome: list = []

    def two_reads(store: Store) -> None:
        try:
            store.swarms()
            between.set()
            assert go_on.wait(WAIT)
            outcome.append(store.swarms())
        except Exception as e:
            outcome.append(e)
        finally:
            ended.set()

    async def main(store: Store) -> None:
        reads = ReadExecutor(store, workers=1, deadline=0.2)
        _cut_off_late(store, lambda: between.wait(WAIT))  # the deadline passes between the two reads
        try:
            with pytest.raises(ReadTimeout):
                await reads(two_reads, store)
            go_on.set()
            assert await asyncio.to_thread(ended.wait, WAIT)
        finally:
            reads.close()

    with Store(tmp_path / "m.db", create=False) as store:
        asyncio.run(main(store))
    assert len(outcome) == 1 and isinstance(outcome[0], ReadInterrupted)
