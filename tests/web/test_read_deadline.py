"""A store read has a deadline: past it the caller gets ReadTimeout (the web: 503) and the read is cut off, so the
read threads are free again. (The PostgreSQL case, a frozen backend, is in tests/monitor/test_store_postgres.py.)"""

from __future__ import annotations

import asyncio

import pytest
from factories import T0, make_snapshot

from monitor.store.sqlite import Store, StoreWriter
from monitor.web.reader import ReadExecutor, ReadTimeout

# ~a minute of SQLite's time (bounded, so a failing run ends too)
LONG = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000000) SELECT count(*) FROM n"


def _long_read(store: Store) -> int:
    with store._read() as conn:
        return conn.execute(LONG).fetchone()[0]


@pytest.mark.timeout(300)
def test_a_read_past_its_deadline_is_interrupted_and_its_thread_serves_the_next(tmp_path):
    with StoreWriter(tmp_path / "m.db") as writer:
        writer.write_snapshot(make_snapshot("test", t=T0))

    async def main(store: Store) -> None:
        reads = ReadExecutor(store, workers=1, deadline=0.5)
        try:
            with pytest.raises(ReadTimeout):
                await reads(_long_read, store)
            async with asyncio.timeout(30):  # the only thread is free again: interrupted, not abandoned
                assert [c.swarm for c in await reads.read("crawls")] == ["test"]
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
    import sqlite3
    import threading

    with StoreWriter(tmp_path / "m.db") as writer:
        writer.write_snapshot(make_snapshot("test", t=T0))
    store = Store(tmp_path / "m.db", create=False)

    class InterruptedAtBegin(sqlite3.Connection):
        """The thread's read connection, on which the web's deadline comes while BEGIN runs."""

        def execute(self, sql, *args):
            if sql == "BEGIN" and not hasattr(self, "hit"):
                self.hit = store.interrupt(threading.get_ident())
                raise sqlite3.OperationalError("interrupted")
            return super().execute(sql, *args)

    uri = f"{(tmp_path / 'm.db').resolve().as_uri()}?mode=ro"
    store._local.conn = sqlite3.connect(uri, uri=True, isolation_level=None, factory=InterruptedAtBegin)
    try:
        with pytest.raises(sqlite3.OperationalError, match="interrupted"):
            store.swarms()
        assert store._local.conn.hit  # the read was cut off while in BEGIN
        assert store.swarms() == ["test"]  # the next read (another request's) is not cut off too
    finally:
        store._local.conn.close()
        store.close()
