"""Runs inside the Petals venv only: makes petals 2.2.0 import and run on hivemind 1.1.12, on 127.0.0.1 only.

Three adjustments, all made before petals is imported and none changing how Petals behaves in a swarm:

- hivemind 1.1.12 stopped re-exporting names at package level that petals 2.2.0 imports (``from hivemind import
  PeerID``, ``from hivemind.utils import anext`` ...). They are put back as attributes of the packages, from the
  submodules that still define them. Installed files are never edited.
- hivemind's P2P daemon gets ``nat_port_map=False, auto_nat=False``: the default would ask the LAN's router for a
  port mapping (UPnP/NAT-PMP), and petals has no flag to turn that off.
- ``petals.utils.version.validate_version`` (an HTTP request to the package index for the newest release) does
  nothing.
"""

from __future__ import annotations

import importlib
import os

# package -> modules whose public names it re-exported before hivemind 1.1.12 (order matters: utils first)
_REEXPORTS: dict[str, tuple[str, ...]] = {
    "hivemind.utils": (
        "hivemind.utils.asyncio",
        "hivemind.utils.limits",
        "hivemind.utils.logging",
        "hivemind.utils.mpfuture",
        "hivemind.utils.nested",
        "hivemind.utils.networking",
        "hivemind.utils.streaming",
        "hivemind.utils.tensor_descr",
        "hivemind.utils.timed_storage",
    ),
    "hivemind.dht": ("hivemind.dht.node", "hivemind.dht.validation"),
    "hivemind": ("hivemind.compression", "hivemind.p2p", "hivemind.utils"),
}


def _public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_") and not _is_module(v)]
    return list(names)


def _is_module(value) -> bool:
    return type(value).__name__ == "module"


def restore_reexports() -> int:
    """Set the missing package-level names; returns how many were added."""
    added = 0
    for package_name, sources in _REEXPORTS.items():
        package = importlib.import_module(package_name)
        for source_name in sources:
            source = importlib.import_module(source_name)
            for name in _public_names(source):
                if not hasattr(package, name) and hasattr(source, name):
                    setattr(package, name, getattr(source, name))
                    added += 1
    return added


def keep_p2p_local() -> None:
    from hivemind.p2p import p2p_daemon

    create = p2p_daemon.P2P.create.__func__

    async def create_without_nat(cls, *args, **kwargs):
        kwargs["nat_port_map"] = False
        kwargs["auto_nat"] = False
        return await create(cls, *args, **kwargs)

    p2p_daemon.P2P.create = classmethod(create_without_nat)


def skip_version_check() -> None:
    import petals.utils.version

    petals.utils.version.validate_version = lambda: None


def apply() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    restore_reexports()
    keep_p2p_local()
    skip_version_check()
