"""SIGINT and SIGTERM both stop the monitor, even when SIGINT arrived ignored.

A shell starts a background job (``python -m monitor demo &`` in a script) with SIGINT ignored, and Python
then installs no KeyboardInterrupt handler: ``kill -INT`` did nothing. The CLI entry points call
:func:`stop_on_sigint_and_sigterm` first, so both signals raise KeyboardInterrupt, which every command
already turns into a clean stop (the asyncio loop of ``serve`` handles both itself while it runs).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stop_on_sigint_and_sigterm() -> None:
    """Make SIGINT (whatever was inherited) and SIGTERM raise KeyboardInterrupt. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)  # asyncio.run() adds its graceful Ctrl-C on top
    signal.signal(signal.SIGTERM, _interrupt)
