"""Shared entry point of the ``fuzz_*.py`` scripts: instrument ``dht`` and ``monitor``, then hand one
``targets.check_*`` function to atheris (libFuzzer flags pass through, see README.md)."""

from __future__ import annotations

import sys
from pathlib import Path


def run(target_name: str) -> None:
    import atheris

    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here), str(here.parent.parent)]
    with atheris.instrument_imports(include=["dht", "monitor"]):
        import targets
    atheris.Setup(sys.argv, getattr(targets, target_name))
    atheris.Fuzz()
