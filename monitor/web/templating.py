"""The jinja2 environment (autoescape on for every template) and the filters pages use to format data.

Everything from the network reaches templates as data: autoescaping makes it inert text, and only URLs that
pass :func:`monitor.report.safe_http_url` / :func:`monitor.report.adapter_url` ever become ``href``s.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlencode

import jinja2

from .. import report
from ..snapshot import ServerInfo

# A glyph per server state, so state never rests on colour alone (the official monitor's, plus "expired").
STATE_GLYPHS = {"online": "●", "joining": "●", "unreachable": "✖", "offline": "_", "expired": "○"}
STATE_DESCRIPTIONS = {
    "online": "Up and running",
    "joining": "Loading blocks, joining soon",
    "unreachable": 'Unreachable from the Internet, see "Reachability issues" below',
    "offline": "Disconnected a few minutes ago",
    "expired": "Its announcement expired and was not refreshed: gone without saying goodbye",
}
HEALTH_GLYPHS = {"healthy": "●", "degraded": "◐", "broken": "✖"}


def asset_dirs() -> tuple[Path, Path]:
    """(templates, static): beside the package when installed from a wheel, else at the repository root."""
    package = Path(__file__).resolve().parent.parent
    for base in (package, package.parent):
        if (base / "templates").is_dir() and (base / "static").is_dir():
            return base / "templates", base / "static"
    raise RuntimeError(f"templates/ and static/ not found near {package}")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    return f"{hours // 24}d {hours % 24}h"


def fmt_period(seconds: float | None) -> str:
    """A crawl interval: ``60 s``, ``5 min``, ``2 h``."""
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        return "–"
    if seconds % 3600 == 0:
        return f"{seconds / 3600:.0f} h"
    if seconds % 60 == 0 and seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def fmt_ttl(ttl: float | None) -> str:
    if ttl is None:
        return "–"
    return fmt_duration(ttl) if ttl >= 0 else f"expired {fmt_duration(-ttl)} ago"


def _utc_datetime(ts: float | None) -> datetime | None:
    """``ts`` as a UTC datetime; None when absent or outside what datetime can show (a peer may announce an
    expiration of 1e20: finite, but it would raise OverflowError and fail the whole page)."""
    if ts is None or not math.isfinite(ts):
        return None
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def fmt_utc(ts: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    moment = _utc_datetime(ts)
    return "–" if moment is None else moment.strftime(fmt) + " UTC"


def iso_utc(ts: float | None) -> str:
    moment = _utc_datetime(ts)
    return "" if moment is None else moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def fmt_ms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "> 5 s" if seconds is not None else "–"
    return f"{seconds * 1000:.1f} ms" if seconds <= 5 else "> 5 s"


def fmt_num(value: float | None, digits: int = 0) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:,.{digits}f}"


def precision(info: ServerInfo) -> str:
    """``f16 (nf4)``: torch dtype with ``float`` shortened, plus the quantization when there is one."""
    text = (info.torch_dtype or "").replace("bfloat", "bf").replace("float", "f")
    if info.quant_type and info.quant_type.lower() != "none":
        text = f"{text} ({info.quant_type})".strip()
    return text


def truncate(text: str | None, length: int = 20) -> str:
    if text is None:
        return ""
    return text if len(text) <= length else text[: length - 1] + "…"


def model_url(dht_prefix: str, **query: object) -> str:
    return "/models/" + quote(dht_prefix, safe="/") + _query(query)


def server_url(peer_id: str, **query: object) -> str:
    return "/servers/" + quote(peer_id, safe="") + _query(query)


def _query(query: dict[str, object]) -> str:
    items = {k: v for k, v in query.items() if v not in (None, "")}
    return "?" + urlencode(items) if items else ""


def with_query(path: str, **query: object) -> str:
    return path + _query(query)


def redundancy_class(count: int) -> str:
    return f"r{min(count, 3)}"


def throughput_class(value: float, peak: float) -> str:
    if value <= 0 or peak <= 0:
        return "t0"
    return f"t{min(4, 1 + int(4 * value / peak * 0.999))}"


def compile_templates(env: jinja2.Environment) -> int:
    """Load every ``.html`` template once (at start-up, on a thread): a template's first use compiles it, 10-60 ms
    that would otherwise stall the first request, or the event loop where a page is rendered on it (the error
    page). Returns how many were loaded."""
    names = [n for n in env.list_templates() if n.endswith(".html")]
    for name in names:
        env.get_template(name)
    return len(names)


def make_environment(templates: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        autoescape=True,  # every template, whatever its extension
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        duration=fmt_duration,
        period=fmt_period,
        ttl=fmt_ttl,
        utc=fmt_utc,
        iso=iso_utc,
        ms=fmt_ms,
        num=fmt_num,
        precision=precision,
        truncate_name=truncate,
        short_id=report.short_peer_id,
    )
    env.globals.update(
        STATE_GLYPHS=STATE_GLYPHS,
        STATE_DESCRIPTIONS=STATE_DESCRIPTIONS,
        HEALTH_GLYPHS=HEALTH_GLYPHS,
        safe_url=report.safe_http_url,
        adapter_url=report.adapter_url,
        model_url=model_url,
        server_url=server_url,
        with_query=with_query,
        redundancy_class=redundancy_class,
        throughput_class=throughput_class,
        cache_tokens_per_block=report.cache_tokens_per_block,
        time=time.time,
    )
    return env
