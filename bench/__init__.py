"""Benchmarks of our DHT client and crawler against hivemind's own client: ``python -m bench [--quick]``.

Each side runs in its own subprocess against the same local swarm of real hivemind 1.1.12 nodes (127.0.0.1
only); see ``bench/README.md`` for what is measured and how. Importing this package does nothing: the side
scripts (``bench.side_ours``, ``bench.side_hivemind``) and the orchestrator import only what they need, and the
hivemind side never imports ``dht`` or ``monitor`` (hivemind's protobufs clash with py-libp2p's).
"""
