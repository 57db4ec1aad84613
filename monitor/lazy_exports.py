"""Let a package's ``__init__`` name its public API without importing it (PEP 562).

``monitor.crawl`` alone would otherwise pull in trio, py-libp2p's callers, APScheduler and SQLite on import, and
the DHT worker process would load what only the web needs. A name's module is imported on first use instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose public ``name`` lives in its submodule ``exports[name]``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
