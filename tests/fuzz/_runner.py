"""Shared entry point of the ``fuzz_*.py`` scripts: instrument ``dht`` and ``monitor``, then hand one
``check_*`` function of ``targets`` (or of another target module) to atheris (libFuzzer flags pass through,
see README.md)."""

from __future__ import annotations

import sys
from pathlib import Path


def run(target_name: str, module: str = "targets") -> None:
    import importlib

    import atheris

    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here), str(here.parent.parent)]
    with atheris.instrument_imports(include=["dht", "monitor"]):
        targets = importlib.import_module(module)
    atheris.Setup(sys.argv, getattr(targets, target_name))
    atheris.Fuzz()
