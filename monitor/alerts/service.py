"""Alerts in the running monitor: state in memory, rules applied after each crawl, events to store and receivers.

Owned by the app lifecycle (``monitor.app``): :meth:`AlertService.open` restores what was firing from the store
(so a restart never fires a condition twice), each crawl job then calls :meth:`after_success` or
:meth:`after_failure`. The rules are pure (``monitor.alerts.rules``); the events go to the one writer and then to the
dispatcher, which returns at once. Nothing here may break a crawl: errors are logged and swallowed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..snapshot import Snapshot
from .delivery import AlertDispatcher
from .rules import AlertEvent, AlertRules, AlertState, evaluate_failure, evaluate_snapshot, restore_state

log = logging.getLogger(__name__)


class AlertService:
    def __init__(
        self, rules: AlertRules, writer: Any, dispatcher: AlertDispatcher, state: AlertState, store: Any = None
    ) -> None:
        self.rules = rules
        self.writer = writer  # WriterThread
        self.dispatcher = dispatcher
        self.state = state
        self.store = store  # where ``reload`` reads the state back

    @staticmethod
    async def _stored_state(store: Any) -> tuple[AlertState, int]:
        active, streaks = await asyncio.gather(
            asyncio.to_thread(store.active_alerts), asyncio.to_thread(store.failure_streaks)
        )
        return restore_state(active, streaks), len(active)

    @classmethod
    async def open(cls, alerts_config: Any, store: Any, writer: Any) -> AlertService:
        """Restore the firing conditions and failure streaks, start the webhook session."""
        state, firing = await cls._stored_state(store)
        dispatcher = AlertDispatcher(getattr(alerts_config, "webhooks", ()))
        await dispatcher.start()
        if firing:
            log.info("%d alert(s) still firing from before the restart", firing)
        return cls(AlertRules.from_config(alerts_config), writer, dispatcher, state, store)

    async def reload(self) -> None:
        """Read the firing conditions and failure streaks back from the store: a replica taking over a swarm's
        crawls continues from what the previous crawler recorded, not from what it saw at its own start."""
        if self.store is not None:
            self.state, _ = await self._stored_state(self.store)

    async def close(self) -> None:
        await self.dispatcher.close()

    async def after_success(self, snapshot: Snapshot) -> list[AlertEvent]:
        self.state, events = evaluate_snapshot(self.state, self.rules, snapshot)
        await self._emit(events)
        return events

    async def after_failure(self, swarm: str, ts: float, error: str, crawl_id: int | None) -> list[AlertEvent]:
        self.state, events = evaluate_failure(self.state, self.rules, swarm, ts, error, crawl_id)
        await self._emit(events)
        return events

    async def _emit(self, events: list[AlertEvent]) -> None:
        if not events:
            return
        try:
            await asyncio.wrap_future(self.writer.record_alert_events(events))
        except Exception:
            log.exception("could not store %d alert event(s)", len(events))
        self.dispatcher.submit(events)
