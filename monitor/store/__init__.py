"""Where snapshots live: SQLite (the default) or PostgreSQL, with one writer thread and read-only readers.

- ``sqlite``           :class:`Store`: the writer (one transaction per crawl) and the read queries, on either backend
- ``location``         ``--db``: an SQLite path or a ``postgresql://`` URL (whose password is never shown)
- ``dialect``          the little SQL that differs between the backends
- ``pg``               PostgreSQL connections (psycopg 3, a pool for readers), imported only when used
- ``rows``             a Snapshot to rows and back
- ``history``          the read-side shapes of history (crawl summaries, diffs, time series): the store's
                       contract with the web
- ``history_queries``  history over raw crawls and rollups
- ``block_history``    online servers per block over time and dark periods, raw and rolled up
- ``alerts``           alert events and state, stored
- ``notices``          what a commit tells every replica's change watch (PostgreSQL NOTIFY payloads)
- ``migrations``       the schema, versioned
- ``retention``        hourly and daily rollups, pruning
- ``diff``             what changed between two stored snapshots (pure)
- ``read_guard``       which connection each reader thread uses, to cut off a read whose caller gave up
- ``dbcheck``          is ``--db`` usable, one line if not (SQLite path or PostgreSQL server)

Importing this package imports none of them: each public name below loads its module on first use.
"""

from ..lazy_exports import lazy_exports

_EXPORTS = {
    "BlockHistory": "history",
    "CrawlDiff": "history",
    "CrawlNotFound": "sqlite",
    "CrawlSummary": "history",
    "DatabaseUnusable": "dbcheck",
    "DbLocation": "location",
    "LATEST_VERSION": "migrations",
    "LeadLost": "sqlite",
    "ModelPoint": "history",
    "ReadInterrupted": "read_guard",
    "SchemaTooNew": "migrations",
    "ServerChange": "history",
    "ServerPoint": "history",
    "Store": "sqlite",
    "StoreWriter": "sqlite",
    "WriterThread": "sqlite",
    "apply_migrations": "migrations",
    "check_database": "dbcheck",
    "diff_snapshots": "diff",
    "open_store": "sqlite",
    "parse_db": "location",
    "redact": "location",
    "schema_version": "migrations",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
