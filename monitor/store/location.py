"""Where the store lives, from ``--db`` / ``[store] url``: an SQLite file (a path or ``sqlite:`` URL, the default)
or a PostgreSQL database (``postgresql://`` or ``postgres://``).

A PostgreSQL URL may carry a password. It is needed to connect and nowhere else: :func:`redact` is what every
message, log line and page shows instead (``postgresql://user:***@host/db``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# A database URL anywhere in a text (messages quote it mid-sentence): its scheme and authority, up to the path,
# query, fragment, white space or a quote.
_URL_AUTHORITY = re.compile(r"(postgres(?:ql)?://)([^\s/?#'\"]*)", re.I)
_PASSWORD_IN_QUERY = re.compile(r"([?&]password=)[^&#\s'\"]*", re.I)


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


def _split_authority(authority: str) -> tuple[str, str, str] | None:
    """``(user, password, host)`` of a URL's authority, or None without a password; the user info ends at the LAST
    '@' (a password may itself hold one)."""
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return None
    user, _, password = userinfo.partition(":")
    return user, password, host


def _redact_authority(match: re.Match[str]) -> str:
    parts = _split_authority(match.group(2))
    if parts is None:
        return match.group(0)
    user, _password, host = parts
    return f"{match.group(1)}{user}:***@{host}"


def redact(text: str) -> str:
    """``text`` with the password of any database URL in it (anywhere in the text) replaced by ``***``."""
    return _PASSWORD_IN_QUERY.sub(r"\1***", _URL_AUTHORITY.sub(_redact_authority, text))


def secrets_of(url: str) -> list[str]:
    """The password(s) in a database URL, as written and percent-decoded: a driver's message may quote them alone
    (e.g. "invalid percent-encoded token"), so messages about this URL are scrubbed of them too."""
    found = [parts[1] for m in _URL_AUTHORITY.finditer(url) if (parts := _split_authority(m.group(2))) is not None]
    found += [m.group(0).split("=", 1)[1] for m in _PASSWORD_IN_QUERY.finditer(url)]
    decoded = [unquote(secret, errors="replace") for secret in found]
    return sorted({s for s in found + decoded if s}, key=len, reverse=True)  # longest first: no partial leftovers
