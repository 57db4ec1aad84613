"""Alerts: which conditions fire (pure rules), the service that keeps their state, and delivery to webhooks.

- ``rules``     conditions of a snapshot or a failed crawl -> alert events (pure)
- ``service``   :class:`AlertService`: evaluates each crawl, records events through the store, hands them on
- ``delivery``  the log and webhooks (generic, Discord, Slack), with retries

Importing this package imports none of them: each public name below loads its module on first use.
"""

from ..lazy_exports import lazy_exports

_EXPORTS = {
    "ActiveAlert": "rules",
    "AlertDispatcher": "delivery",
    "AlertEvent": "rules",
    "AlertRules": "rules",
    "AlertService": "service",
    "AlertState": "rules",
    "Severity": "rules",
    "evaluate_failure": "rules",
    "evaluate_snapshot": "rules",
    "event_document": "delivery",
    "restore_state": "rules",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
