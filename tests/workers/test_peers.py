"""The Redis peer registry against a real redis-server."""

from __future__ import annotations

import time

from rdma_loader.registry import Advertisement, Registry
from workers.peers import RedisRegistry


def test_advertised_peers_are_found_fastest_first_and_withdrawn(redis_url):
    registry = RedisRegistry(redis_url)
    assert isinstance(registry, Registry)
    fp = "a" * 64
    slow = Advertisement(fp, "10.0.0.2", 7070, ("tcp",), 1e8, "tiny")
    fast = Advertisement(fp, "10.0.0.3", 7071, ("tcp", "rdma"), 1e10, "tiny")
    registry.advertise(slow, ttl_s=30)
    registry.advertise(fast, ttl_s=30)
    registry.advertise(Advertisement("b" * 64, "10.0.0.4", 7070, model="big"), ttl_s=30)
    assert registry.lookup(fp) == (fast, slow)
    assert registry.lookup_model("tiny") == (fast, slow)
    registry.withdraw(fast)
    assert registry.lookup(fp) == (slow,) and registry.lookup_model("tiny") == (slow,)


def test_an_advertisement_expires_unless_refreshed(redis_url):
    registry = RedisRegistry(redis_url)
    ad = Advertisement("c" * 64, "10.0.0.5", 7070, model="gone")
    registry.advertise(ad, ttl_s=0.3)
    assert registry.lookup(ad.fingerprint) == (ad,)
    time.sleep(0.5)
    assert registry.lookup(ad.fingerprint) == () and registry.lookup_model("gone") == ()
