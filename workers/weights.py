"""Weights between workers: which load format a model switch uses, and serving the resident
model to peers.

``peer_load_args(alias, spec, settings)`` returns the extra ``vllm.LLM`` keyword arguments
(``load_format`` and ``model_loader_extra_config``) that make a model switch pull its weights
through ``rdma_loader.plugin``, or ``{}`` to keep vLLM's default loader. Peers come from
``weight_peers`` and from the registry (``workers.peers``), looked up by model alias: every
machine of a lab names its models the same way in ``nightshift.toml``, while their directories
differ. The loader picks the fastest source (a local NVMe still wins over a 1-10 GbE peer) and
falls back to the local disk when no peer answers, so asking for it costs little.

``ResidentServer`` is the other half: once a worker has loaded a model from a local directory,
it serves those files to peers (a ``rdma_loader.WeightServer`` on its own threads) and
advertises them in the registry until the next swap.
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path
from typing import Any

from rdma_loader import LOAD_FORMAT
from rdma_loader.registry import Advertisement, Registry
from scheduler import ModelSpec, Settings

log = logging.getLogger(__name__)
ADVERTISE_TTL_S = 30.0


def peer_load_args(alias: str, spec: ModelSpec, settings: Settings,
                   registry: Registry | None = None) -> dict[str, Any]:
    secret_file = settings.cluster_secret_file
    if not secret_file or "load_format" in spec.engine_args:  # off, or the model's own choice wins
        return {}
    peers: list[Any] = list(settings.weight_peers)
    registry = registry or make_registry(settings)
    if registry is not None:
        try:
            ads = registry.lookup_model(alias)
        except Exception as exc:  # a registry outage must not stop a model switch: static peers only
            log.warning("peer registry unavailable: %s", exc)
            ads = ()
        peers += [{"host": ad.host, "port": ad.port, "bandwidth_bytes_s": ad.bandwidth_bytes_s,
                   "transport": "tcp"} for ad in ads]
    if not peers:
        return {}
    extra: dict[str, Any] = {"peers": peers, "secret_file": str(secret_file)}
    if Path(spec.source).is_dir():
        extra["local_dir"] = spec.source
    return {"load_format": LOAD_FORMAT, "model_loader_extra_config": extra}


def make_registry(settings: Settings) -> Registry | None:
    if not settings.weight_registry_url:
        return None
    from workers.peers import RedisRegistry

    return RedisRegistry(settings.weight_registry_url)


class ResidentServer:
    """Serves the worker's resident model to peers while it stays resident."""

    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else make_registry(settings)
        self.server = None  # rdma_loader.WeightServer while one runs
        self.ad: Advertisement | None = None
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.settings.cluster_secret_file) and self.settings.serve_resident_weights

    def serve(self, alias: str) -> None:
        """The worker now holds ``alias``: serve it (and stop serving the previous model)."""
        self.stop()
        spec = self.settings.models.get(alias)
        if not self.enabled or spec is None or not Path(spec.source).is_dir():
            return
        from rdma_loader.server import WeightServer, secret_from

        try:
            secret = secret_from(self.settings.cluster_secret_file, None)
            self.server = WeightServer(Path(spec.source), secret, self.settings.weight_server_host,
                                       self.settings.weight_server_port).start()
        except Exception as exc:  # serving peers is a courtesy: the worker's own work goes on
            log.warning("not serving %s to peers: %s", alias, exc)
            self.server = None
            return
        self.ad = Advertisement(self.server.manifest.fingerprint, self._advertised_host(), self.server.port,
                                ("tcp",), None, model=alias)
        log.info("serving %s to peers on %s:%s", alias, self.ad.host, self.ad.port)
        if self.registry is not None:
            self._quietly(self.registry.advertise, self.ad, ADVERTISE_TTL_S)
            self._stop = threading.Event()
            self._refresher = threading.Thread(target=self._advertise_forever, name="advertise", daemon=True)
            self._refresher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=5)
            self._refresher = None
        if self.ad is not None and self.registry is not None:
            self._quietly(self.registry.withdraw, self.ad)
        if self.server is not None:
            self.server.close()
        self.server, self.ad = None, None

    def _advertised_host(self) -> str:
        host = self.settings.weight_advertise_host or self.settings.weight_server_host
        return socket.gethostname() if host in ("0.0.0.0", "::") else host

    def _advertise_forever(self) -> None:
        while not self._stop.wait(ADVERTISE_TTL_S / 3):  # refreshed well within its TTL
            self._quietly(self.registry.advertise, self.ad, ADVERTISE_TTL_S)

    @staticmethod
    def _quietly(call, *args) -> None:
        try:
            call(*args)
        except Exception as exc:  # the registry being down must not stop the worker; retried
            log.warning("peer registry: %s", exc)
