"""Alerts in the running monitor: state in memory, rules applied after each crawl, events to store and receivers.

Owned by the app lifecycle (``monitor.app``): :meth:`AlertService.open` restores what was firing from the store
(so a restart never fires a condition twice), each crawl job then calls :meth:`after_success` or
:meth:`after_failure`. The rules are pure (``monitor.alerts.rules``); the events go to the one writer and, once
committed, to the dispatcher, which returns at once. Events the writer could not store are neither sent nor kept
as firing: the next crawl finds them again. Nothing here may break a crawl: errors are logged and swallowed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..snapshot import Snapshot
from ..store.sqlite import LeadLost
from .delivery import AlertDispatcher
from .rules import AlertEvent, AlertRules, AlertState, evaluate_failure, evaluate_snapshot, forget, restore_state

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
    async def open(cls, alerts_config: Any, store: Any, writer: Any, route_config: Any = None) -> AlertService:
        """Restore the firing conditions and failure streaks, start the webhook session."""
        state, firing = await cls._stored_state(store)
        dispatcher = AlertDispatcher(getattr(alerts_config, "webhooks", ()))
        await dispatcher.start()
        if firing:
            log.info("%d alert(s) still firing from before the restart", firing)
        return cls(AlertRules.from_config(alerts_config, route_config), writer, dispatcher, state, store)

    async def reload(self) -> None:
        """Read the firing conditions and failure streaks back from the store: a replica taking over a swarm's
        crawls continues from what the previous crawler recorded, not from what it saw at its own start."""
        if self.store is not None:
            self.state, _ = await self._stored_state(self.store)

    async def close(self) -> None:
        await self.dispatcher.close()

    async def after_success(self, snapshot: Snapshot) -> list[AlertEvent]:
        """The events this crawl caused that were stored (and so sent); [] if the store failed."""
        before = self.state
        self.state, events = evaluate_snapshot(before, self.rules, snapshot)
        return await self._commit(events, before)

    async def after_failure(self, swarm: str, ts: float, error: str, crawl_id: int | None) -> list[AlertEvent]:
        before = self.state
        self.state, events = evaluate_failure(before, self.rules, swarm, ts, error, crawl_id)
        return await self._commit(events, before)

    async def _commit(self, events: list[AlertEvent], before: AlertState) -> list[AlertEvent]:
        """Store ``events``, then dispatch them; if they cannot be stored, undo them in the state (the state was
        updated before the wait, so a concurrent crawl of another swarm builds on it)."""
        if not events:
            return []
        try:
            await asyncio.wrap_future(self.writer.record_alert_events(events))
        except Exception as e:
            if isinstance(e, LeadLost):  # expected when a replica loses its connection: one line, no traceback
                log.warning("%d alert event(s) not stored: %s", len(events), e)
            else:
                log.exception("could not store %d alert event(s); the next crawl evaluates them again", len(events))
            self.state = forget(self.state, events, before)
            return []
        self.dispatcher.submit(events)
        return events
