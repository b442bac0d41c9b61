"""The registry seam: advertisements and the static registry."""

from __future__ import annotations

import pytest

from rdma_loader.registry import Advertisement, Registry, StaticRegistry


def test_lookup_finds_peers_of_a_fingerprint_fastest_first():
    slow = Advertisement("f" * 64, "10.0.0.2", 7070, bandwidth_bytes_s=1e8, model="tiny")
    fast = Advertisement("f" * 64, "10.0.0.3", 7070, ("tcp", "rdma"), 1e10, model="tiny")
    other = Advertisement("e" * 64, "10.0.0.4", 7070, model="big")
    registry = StaticRegistry([slow, fast, other])
    assert isinstance(registry, Registry)
    assert registry.lookup("f" * 64) == (fast, slow)
    assert registry.lookup_model("big") == (other,)
    registry.withdraw(fast)
    assert registry.lookup("f" * 64) == (slow,)


def test_advertisements_round_trip_and_validate():
    ad = Advertisement("f" * 64, "h", 1, ("tcp", "rdma"), 2.5e9, "tiny")
    assert Advertisement.from_json(ad.to_json()) == ad
    with pytest.raises(ValueError, match="port"):
        Advertisement("f", "h", 0)
    with pytest.raises(ValueError, match="transports"):
        Advertisement("f", "h", 1, ("udp",))
    with pytest.raises(ValueError, match="advertisement"):
        Advertisement.from_json({"host": "h"})
