"""`nightshift serve-weights` as a user starts it: it advertises on Redis, a puller finds it
there by model name and pulls every byte; on SIGTERM it withdraws."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from rdma_loader.puller import Puller
from rdma_loader.sources import PeerSource
from rdma_loader.tcp import PeerConnection
from tests.rdma_loader.conftest import SECRET, expected_bytes, make_random_model
from workers.peers import RedisRegistry


def test_serve_weights_advertises_and_serves_until_stopped(tmp_path, redis_url):
    model = make_random_model(tmp_path / "model", [[1 << 20, 4096]])
    env = {**os.environ, "NIGHTSHIFT_CLUSTER_SECRET": SECRET.decode(), "NIGHTSHIFT_CONFIG": str(tmp_path / "none.toml")}
    proc = subprocess.Popen([sys.executable, "-m", "nightshift", "serve-weights", str(model),
                             "--registry", redis_url, "--bandwidth-bytes-s", "1e9"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        registry = RedisRegistry(redis_url)
        deadline = time.monotonic() + 10
        while not (ads := registry.lookup_model(str(model))) and time.monotonic() < deadline:
            time.sleep(0.1)
        (ad,) = ads
        assert (ad.port, ad.fingerprint, ad.bandwidth_bytes_s) == (ready["port"], ready["fingerprint"], 1e9)
        conn = PeerConnection(ad.host, ad.port, SECRET)
        manifest = conn.manifest()
        conn.close()
        peer = PeerSource(ad.host, ad.port, SECRET, bandwidth_bytes_s=ad.bandwidth_bytes_s)
        result = Puller([peer]).pull(manifest)
        expected = expected_bytes(model, manifest)
        assert all(bytes(view) == expected[t.name] for t, view in result.tensors())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0
    assert registry.lookup(ready["fingerprint"]) == ()
