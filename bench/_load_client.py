"""A loopback HTTP load generator on aiohttp, run in a process of its own (the server's CPU stays the server's).

``python -m bench._load_client CONFIG.json`` prints one JSON line of :func:`hammer`'s result. CONFIG: ``base``
(``http://127.0.0.1:PORT``), ``paths`` (each client cycles through them), ``clients``, ``duration`` seconds,
optional ``headers`` and ``timeout`` (per request). Every client has its own connection (no pooling across
clients), so ``clients`` is also the number of concurrent connections. Used where wrk is missing, and by
``tests/web/test_load.py``, which needs error kinds and statuses rather than speed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def hammer(
    base: str,
    paths: list[str],
    *,
    clients: int,
    duration: float,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """``clients`` loops of GETs for ``duration`` seconds: counts, statuses, error kinds, latency percentiles."""
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    body_bytes = 0
    started = time.perf_counter()
    deadline = started + duration
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def client(index: int) -> None:
        nonlocal body_bytes
        connector = aiohttp.TCPConnector(limit=1, force_close=False)
        async with aiohttp.ClientSession(connector=connector, timeout=client_timeout, auto_decompress=False) as s:
            i = index
            while time.perf_counter() < deadline:
                path = paths[i % len(paths)]
                i += 1
                t0 = time.perf_counter()
                try:
                    async with s.get(base + path, headers=headers, allow_redirects=False) as r:
                        body_bytes += len(await r.read())
                        statuses[r.status] += 1
                except (aiohttp.ClientError, TimeoutError, OSError) as e:
                    errors[type(e).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    done = sum(statuses.values())
    return {
        "requests": done,
        "elapsed": elapsed,
        "rps": done / elapsed if elapsed else 0.0,
        "p50_ms": None if not latencies else percentile(latencies, 0.5) * 1000,
        "p99_ms": None if not latencies else percentile(latencies, 0.99) * 1000,
        "max_ms": None if not latencies else latencies[-1] * 1000,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "bytes": body_bytes,
    }


def main(argv: list[str]) -> int:
    cfg = json.loads(Path(argv[0]).read_text())
    result = asyncio.run(
        hammer(
            cfg["base"],
            cfg["paths"],
            clients=int(cfg["clients"]),
            duration=float(cfg["duration"]),
            headers=cfg.get("headers"),
            timeout=float(cfg.get("timeout", 30.0)),
        )
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
