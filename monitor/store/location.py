"""Where the store lives, from ``--db`` / ``[store] url``: an SQLite file (a path or ``sqlite:`` URL, the default)
or a PostgreSQL database (``postgresql://`` or ``postgres://``).

A PostgreSQL URL may carry a password. It is needed to connect and nowhere else: :func:`redact` is what every
message, log line and page shows instead (``postgresql://user:***@host/db``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_PASSWORD_IN_NETLOC = re.compile(r"^(\w+://[^/?#@:]*):[^/?#@]*@")
_PASSWORD_IN_QUERY = re.compile(r"([?&]password=)[^&#]*", re.I)


@dataclass(frozen=True, slots=True)
class DbLocation:
    path: Path | None = None  # SQLite
    url: str | None = None  # PostgreSQL (with its credentials: never print it, print ``shown``)

    @property
    def is_postgres(self) -> bool:
        return self.url is not None

    @property
    def shown(self) -> str:
        return redact(self.url) if self.url is not None else str(self.path)


def is_postgres_url(db: object) -> bool:
    return isinstance(db, str) and db.lower().startswith(POSTGRES_SCHEMES)


def parse_db(db: str | Path | DbLocation) -> DbLocation:
    """``sqlite:monitor.db`` and ``sqlite:///abs/monitor.db`` are paths; ``postgresql://...`` a database."""
    if isinstance(db, DbLocation):
        return db
    if db is None:  # never a file called "None" (a PostgreSQL store's ``path`` is None)
        raise TypeError("no database given: a path, an sqlite: URL or a postgresql:// URL")
    if is_postgres_url(db):
        return DbLocation(url=str(db))
    text = str(db)
    if text.lower().startswith("sqlite:"):
        text = text[len("sqlite:") :]
        if text.startswith("//"):
            text = text[2:]
    return DbLocation(path=Path(text))


def redact(text: str) -> str:
    """``text`` with any password of a database URL in it replaced by ``***``."""
    return _PASSWORD_IN_QUERY.sub(r"\1***", _PASSWORD_IN_NETLOC.sub(r"\1:***@", text))
