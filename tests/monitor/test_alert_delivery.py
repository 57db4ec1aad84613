"""monitor.alerts.delivery: webhooks against local aiohttp receivers on 127.0.0.1 (ok, fails then ok, hangs, 4xx),
payload shapes, URL masking, and a dispatcher that never blocks its caller.

pytest-trio owns async tests here, so each test runs its own asyncio loop with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field

from aiohttp import web

from monitor.alerts.delivery import (
    AlertDispatcher,
    backoff_delay,
    event_document,
    mask_url,
    payload,
    post_with_retries,
)
from monitor.alerts.rules import AlertEvent
from monitor.config import WebhookConfig

SECRET = "s3cr3t-T0KEN"
EVENT = AlertEvent("demo", "broken", "m", "firing", "critical", 1_700_000_000.0, "model <b>m</b> is broken", 4)
RESOLVED = AlertEvent("demo", "broken", "m", "resolved", "critical", 1_700_000_600.0, "m: fixed", 9, 1_700_000_000.0)


@dataclass
class Receiver:
    """A webhook receiver: answers ``statuses`` in turn (then 200), or never answers when ``hang``."""

    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    bodies: list[dict] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    got: asyncio.Event | None = None
    release: asyncio.Event | None = None  # a hanging handler waits for this (set on cleanup)

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path_qs)
        self.bodies.append(await request.json())
        if self.got is not None:
            self.got.set()
        if self.hang:
            assert self.release is not None
            await asyncio.wait_for(self.release.wait(), 60)
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)


class Running:
    def __init__(self, receiver: Receiver, runner: web.AppRunner) -> None:
        self.receiver, self.runner = receiver, runner

    async def cleanup(self) -> None:
        assert self.receiver.release is not None
        self.receiver.release.set()  # let hanging handlers end, so the server shuts down at once
        await self.runner.cleanup()


async def serve(receiver: Receiver) -> tuple[Running, str]:
    receiver.got = asyncio.Event()
    receiver.release = asyncio.Event()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return Running(receiver, runner), f"http://{host}:{port}/hook/{SECRET}?token={SECRET}"


def hook(url: str, **kw) -> WebhookConfig:
    return WebhookConfig(url=url, **{"timeout": 2.0, "max_attempts": 3, "backoff_seconds": 0.5, **kw})


class FakeSleep:
    """Records backoff delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def post_once(receiver: Receiver, **kw) -> tuple[bool, FakeSleep]:
    import aiohttp

    runner, url = await serve(receiver)
    sleep = FakeSleep()
    try:
        async with aiohttp.ClientSession() as session:
            ok = await post_with_retries(session, hook(url, **kw), payload(EVENT, "generic"), sleep=sleep)
    finally:
        await runner.cleanup()
    return ok, sleep


def test_payload_shapes():
    generic = payload(EVENT, "generic")
    assert generic["event"] == event_document(EVENT) and generic["event"]["status"] == "firing"
    assert generic["text"] == "[FIRING critical] demo: model <b>m</b> is broken"
    assert payload(EVENT, "discord") == {"content": generic["text"]}
    assert payload(RESOLVED, "slack") == {"text": "[RESOLVED critical] demo: m: fixed"}
    assert len(payload(dataclasses.replace(EVENT, message="x" * 5000), "discord")["content"]) == 2000


def test_mask_url_hides_path_query_and_credentials():
    assert (
        mask_url(f"https://user:pw@hooks.example.com/services/{SECRET}?t={SECRET}") == "https://hooks.example.com/***"
    )
    assert mask_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert mask_url(f"http://[::1]:9/{SECRET}") == "http://[::1]:9/***"


def test_backoff_doubles_and_is_capped():
    assert [backoff_delay(n, 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_delay(30, 1.0) == 300.0


def test_success_on_first_try():
    receiver = Receiver()
    ok, sleep = asyncio.run(post_once(receiver))
    assert ok and len(receiver.bodies) == 1 and sleep.delays == []
    assert receiver.bodies[0]["event"]["subject"] == "m"


def test_fails_first_then_succeeds_with_backoff(caplog):
    receiver = Receiver(statuses=[503, 500])
    with caplog.at_level(logging.INFO, logger="monitor.alerts.delivery"):
        ok, sleep = asyncio.run(post_once(receiver))
    assert ok and len(receiver.bodies) == 3 and sleep.delays == [0.5, 1.0]
    assert "HTTP 503" in caplog.text and SECRET not in caplog.text


def test_gives_up_after_max_attempts(caplog):
    receiver = Receiver(statuses=[500, 502, 503, 504])
    with caplog.at_level(logging.INFO, logger="monitor.alerts.delivery"):
        ok, sleep = asyncio.run(post_once(receiver))
    assert not ok and len(receiver.bodies) == 3 and len(sleep.delays) == 2
    assert "giving up after 3 attempts" in caplog.text and SECRET not in caplog.text


def test_client_error_is_not_retried():
    receiver = Receiver(statuses=[404])
    ok, sleep = asyncio.run(post_once(receiver))
    assert not ok and len(receiver.bodies) == 1 and sleep.delays == []


def test_a_hanging_receiver_times_out_per_request(caplog):
    receiver = Receiver(hang=True)

    async def main() -> tuple[bool, float, FakeSleep]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        ok, sleep = await post_once(receiver, timeout=0.3, max_attempts=2)
        return ok, loop.time() - t0, sleep

    with caplog.at_level(logging.INFO, logger="monitor.alerts.delivery"):
        ok, elapsed, sleep = asyncio.run(main())
    assert not ok and len(receiver.bodies) == 2 and sleep.delays == [0.5]
    assert elapsed < 5.0  # two 0.3 s timeouts, not an hour
    assert "timed out" in caplog.text and SECRET not in caplog.text


def test_dispatcher_returns_at_once_and_delivers_in_the_background(caplog):
    receiver = Receiver(hang=False)

    async def main() -> tuple[float, AlertDispatcher]:
        runner, url = await serve(receiver)
        slow = Receiver(hang=True)
        slow_runner, slow_url = await serve(slow)
        dispatcher = AlertDispatcher([hook(url, format="slack"), hook(slow_url, timeout=30.0, max_attempts=1)])
        await dispatcher.start()
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            dispatcher.submit([EVENT, RESOLVED])
            submit_time = loop.time() - t0
            await asyncio.wait_for(_until(lambda: len(receiver.bodies) == 2), 10)
            await asyncio.wait_for(slow.got.wait(), 10)
        finally:
            await dispatcher.close(grace=0.1)  # cancels the hanging delivery
            await runner.cleanup()
            await slow_runner.cleanup()
        return submit_time, dispatcher

    with caplog.at_level(logging.INFO, logger="monitor.alerts.delivery"):
        submit_time, dispatcher = asyncio.run(main())
    assert submit_time < 0.05
    assert sorted(b["text"][:9] for b in receiver.bodies) == ["[FIRING c", "[RESOLVED"]
    assert dispatcher.delivered == 2
    assert "FIRING critical] demo: model <b>m</b> is broken" in caplog.text and SECRET not in caplog.text


def test_send_resolved_false_skips_resolved_events():
    receiver = Receiver()

    async def main() -> None:
        runner, url = await serve(receiver)
        dispatcher = AlertDispatcher([hook(url, send_resolved=False)])
        await dispatcher.start()
        try:
            dispatcher.submit([RESOLVED, EVENT])
            assert await dispatcher.drain(10)
        finally:
            await dispatcher.close()
            await runner.cleanup()

    asyncio.run(main())
    assert [b["event"]["status"] for b in receiver.bodies] == ["firing"]


def test_pending_deliveries_are_bounded(caplog):
    receiver = Receiver(hang=True)

    async def main() -> AlertDispatcher:
        runner, url = await serve(receiver)
        dispatcher = AlertDispatcher([hook(url, timeout=30.0, max_attempts=1)], max_pending=2)
        await dispatcher.start()
        try:
            dispatcher.submit([EVENT] * 5)
        finally:
            await dispatcher.close(grace=0)
            await runner.cleanup()
        return dispatcher

    with caplog.at_level(logging.WARNING, logger="monitor.alerts.delivery"):
        dispatcher = asyncio.run(main())
    assert dispatcher.dropped == 3 and "dropped" in caplog.text


async def _until(condition, step: float = 0.01) -> None:
    while not condition():
        await asyncio.sleep(step)
