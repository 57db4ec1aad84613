"""``--db`` that cannot be used: one line naming the path and the reason, exit 2 (was a 21-line traceback, exit 1)."""

from __future__ import annotations

import os
import sqlite3

import pytest

from monitor.cli import EXIT_BAD_CONFIG, main
from monitor.store.dbcheck import check_database

PEER = "/ip4/127.0.0.1/tcp/9/p2p/QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY"


def _unwritable(tmp_path) -> tuple[str, str]:
    """A path the monitor may not create, and the reason it will give (root ignores permission bits)."""
    if os.geteuid() == 0:
        return "/proc/petals-monitor-test.db", "cannot be opened (unable to open database file)"
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    return str(locked / "m.db"), f"cannot be created: directory {locked} is not writable"


def _cases(tmp_path) -> list[tuple[str, str]]:
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("these are my notes, not a database\n")
    return [
        (str(tmp_path), "is a directory"),
        (str(tmp_path / "missing" / "m.db"), f"directory {tmp_path / 'missing'} does not exist"),
        (str(not_sqlite), "is not an SQLite database"),
        (str(not_sqlite / "m.db"), f"{not_sqlite} is not a directory"),
        _unwritable(tmp_path),
    ]


def _never_started(*_args, **_kwargs):
    raise AssertionError("started with a database it cannot use")


@pytest.mark.parametrize("command", [["crawl", "--once"], ["serve"], ["demo"]])
def test_a_bad_db_path_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, command):
    import monitor.app
    import monitor.crawl.oneshot
    import monitor.demo

    for module, name in ((monitor.app, "serve"), (monitor.demo, "run_demo_cli"), (monitor.crawl.oneshot, "crawl_once")):
        monkeypatch.setattr(module, name, _never_started)
    for db, reason in _cases(tmp_path):
        args = [*command, "--db", db] + (["--initial-peer", PEER] if command[0] != "demo" else [])
        with pytest.raises(SystemExit) as exited:
            main(args)
        assert exited.value.code == EXIT_BAD_CONFIG, db
        err = capsys.readouterr().err
        assert err == f"config error: database {db!r}: {reason}\n"


def test_a_usable_path_gets_a_migrated_database(tmp_path):
    path = tmp_path / "m.db"
    check_database(path)
    check_database(path)  # an existing database is fine too
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    empty = tmp_path / "empty.db"
    empty.touch()  # SQLite treats an empty file as a new database
    check_database(empty)
