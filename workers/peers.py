"""The peer registry on Redis: which weight servers serve which model fingerprint.

Implements ``rdma_loader.registry.Registry``. Each advertisement is one key holding its JSON,
expiring ``ttl_s`` after the last refresh, plus a sorted-set entry (score: expiry time) under
its fingerprint and under its model name, so a lookup reads only live peers and sweeps the
expired ones. A weight server refreshes well within the TTL (``nightshift serve-weights``: every
TTL/3), so a machine that dies leaves the registry within one TTL.
"""

from __future__ import annotations

import json
import time

from rdma_loader.registry import Advertisement

PREFIX = "nightshift:weights"


class RedisRegistry:
    def __init__(self, url: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url, decode_responses=True)

    def _ad_key(self, ad: Advertisement) -> str:
        return f"{PREFIX}:ad:{ad.fingerprint}:{ad.key}"

    def advertise(self, ad: Advertisement, ttl_s: float) -> None:
        expires_at = time.time() + ttl_s
        key = self._ad_key(ad)
        pipe = self.redis.pipeline()
        pipe.set(key, json.dumps(ad.to_json()), px=int(ttl_s * 1000))
        pipe.zadd(f"{PREFIX}:fp:{ad.fingerprint}", {key: expires_at})
        if ad.model:
            pipe.zadd(f"{PREFIX}:model:{ad.model}", {key: expires_at})
        pipe.execute()

    def withdraw(self, ad: Advertisement) -> None:
        key = self._ad_key(ad)
        pipe = self.redis.pipeline()
        pipe.delete(key)
        pipe.zrem(f"{PREFIX}:fp:{ad.fingerprint}", key)
        if ad.model:
            pipe.zrem(f"{PREFIX}:model:{ad.model}", key)
        pipe.execute()

    def lookup(self, fingerprint: str) -> tuple[Advertisement, ...]:
        return self._live(f"{PREFIX}:fp:{fingerprint}")

    def lookup_model(self, model: str) -> tuple[Advertisement, ...]:
        return self._live(f"{PREFIX}:model:{model}")

    def _live(self, index: str) -> tuple[Advertisement, ...]:
        now = time.time()
        self.redis.zremrangebyscore(index, "-inf", now)
        keys = self.redis.zrangebyscore(index, now, "+inf")
        ads = [Advertisement.from_json(json.loads(raw)) for raw in self.redis.mget(keys) if raw] if keys else []
        return tuple(sorted(ads, key=lambda ad: -(ad.bandwidth_bytes_s or 0.0)))
