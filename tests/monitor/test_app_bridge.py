"""Where the app runs the DHT: the configured bridge, and what it sends to a worker process must pickle."""

from __future__ import annotations

import pickle

from monitor.app import _crawl_and_judge, _probe_in_trio, make_bridge
from monitor.config import Config
from monitor.crawl.bridge import TrioBridge
from monitor.crawl.worker import ProcessBridge


def test_the_configured_bridge_is_made():
    assert isinstance(make_bridge(Config()), ProcessBridge)
    assert isinstance(make_bridge(Config(crawl_worker="thread")), TrioBridge)


def test_what_crosses_to_the_worker_pickles():
    config = Config()
    factory = make_bridge(config)._factory  # spawned: the child rebuilds the runtime from this
    again = pickle.loads(pickle.dumps(factory))
    assert again.args == (config,)
    for fn in (_crawl_and_judge, _probe_in_trio):
        assert pickle.loads(pickle.dumps(fn)) is fn
    assert pickle.loads(pickle.dumps(config.swarms[0])) == config.swarms[0]
