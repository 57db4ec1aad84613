"""Is ``--db`` usable? One line naming the path (or the URL, password hidden) and the reason, before anything
starts.

A directory, a missing parent, an unwritable place or a file that is not SQLite used to surface as a
traceback from deep inside the app's start-up (or the writer thread); so would a PostgreSQL server that is down,
refuses us, or has no such database. The CLI asks here first and exits 2 with the message, as for any other bad
setting.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .location import DbLocation, parse_db, redact, secrets_of
from .sqlite import ensure_schema

SQLITE_HEADER = b"SQLite format 3\x00"


class DatabaseUnusable(Exception):
    """The database path cannot be used; ``str(e)`` is the one-line message."""


def _reason(path: Path) -> str | None:
    """Why ``path`` cannot hold the monitor's database, from what the file system says (None: looks fine)."""
    if path.is_dir():
        return "is a directory"
    parent = path.parent
    if not parent.exists():
        return f"directory {parent} does not exist"
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if path.exists():
        if not path.is_file():
            return "is not a regular file"
        try:
            with path.open("rb") as f:
                header = f.read(len(SQLITE_HEADER))
        except OSError as e:
            return f"cannot be read ({e.strerror or e})"
        if header and header != SQLITE_HEADER:
            return "is not an SQLite database"
        if not os.access(path, os.W_OK):
            return "is not writable"
    elif not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: directory {parent} is not writable"
    return None


def one_line(exc: BaseException, location: DbLocation | None = None) -> str:
    """An error's message on one line, any database password in it hidden (also where the message quotes the
    password of ``location``'s URL on its own)."""
    text = redact(" ".join(str(exc).split()) or type(exc).__name__)
    for secret in secrets_of(location.url) if location is not None and location.url else ():
        text = text.replace(secret, "***")
    return text


def _postgres_reason(location: DbLocation) -> str | None:
    from .pg import PostgresMissing, is_connection_error

    try:
        ensure_schema(location)
    except PostgresMissing as e:
        return str(e)
    except Exception as e:  # psycopg's errors: connection refused, authentication, no such database, permissions
        if is_connection_error(e):
            return f"cannot connect ({one_line(e, location)})"
        return f"cannot be used ({one_line(e, location)})"
    return None


def check_database(db: str | Path | DbLocation) -> None:
    """Create or migrate the database ``db``, or raise :class:`DatabaseUnusable` saying why not."""
    location = parse_db(db)
    if location.is_postgres:
        reason = _postgres_reason(location)
        if reason is not None:
            raise DatabaseUnusable(f"database {location.shown!r}: {reason}")
        return
    path = location.path
    reason = _reason(path)
    if reason is None:
        try:
            ensure_schema(path)
        except (sqlite3.Error, OSError) as e:  # what the checks above cannot see (e.g. root in a read-only /proc)
            reason = f"cannot be opened ({e})"
    if reason is not None:
        raise DatabaseUnusable(f"database {str(path)!r}: {reason}")
