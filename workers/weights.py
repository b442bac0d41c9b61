"""Which load format a worker's engine uses: the peer loader when peers can serve the model.

``peer_load_args(spec, settings)`` returns the extra ``vllm.LLM`` keyword arguments
(``load_format`` and ``model_loader_extra_config``) that make a model switch pull its weights
through ``rdma_loader.plugin``, or ``{}`` to keep vLLM's default loader. Peers come from the
settings' static list and from the registry (``workers.peers``) by model source. The loader
itself picks the fastest source (a local NVMe still wins over a 1-10 GbE peer) and falls back to
the local disk when no peer answers, so asking for it costs little.

The settings fields read here are proposed for ``scheduler.settings.Settings`` and read with
``getattr`` until they exist: ``cluster_secret_file`` (Path | None), ``weight_peers``
(list of "host:port"), ``weight_registry_url`` (a redis:// URL, "" for none).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rdma_loader import LOAD_FORMAT
from rdma_loader.registry import Registry
from scheduler import ModelSpec, Settings

log = logging.getLogger(__name__)


def peer_load_args(spec: ModelSpec, settings: Settings, registry: Registry | None = None) -> dict[str, Any]:
    secret_file = getattr(settings, "cluster_secret_file", None)
    if not secret_file or "load_format" in spec.engine_args:  # off, or the model's own choice wins
        return {}
    peers: list[Any] = list(getattr(settings, "weight_peers", []) or [])
    registry = registry or _registry(settings)
    if registry is not None:
        try:
            ads = registry.lookup_model(spec.source)
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


def _registry(settings: Settings) -> Registry | None:
    url = getattr(settings, "weight_registry_url", "")
    if not url:
        return None
    from workers.peers import RedisRegistry

    return RedisRegistry(url)
