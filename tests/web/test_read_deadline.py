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
