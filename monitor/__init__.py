"""Petals swarm health monitor: crawl → validated snapshot → SQLite → web.

This package imports ``dht``; ``dht`` never imports it.
"""
