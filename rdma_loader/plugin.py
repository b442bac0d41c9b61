"""The vLLM model loader ``nightshift-peer``: weights pulled from peers, verified, zero-copy.

Registered in every vLLM process by the ``vllm.general_plugins`` entry point
``nightshift_peer = "rdma_loader.plugin:register"`` (pyproject.toml; reinstall the package,
``pip install --no-deps -e .`` or ``make install``, after changing it). Use it with::

    LLM(model=MODEL_DIR, load_format="nightshift-peer", model_loader_extra_config={
        "peers": [{"host": "10.0.0.2", "port": 7070, "transport": "tcp",
                   "bandwidth_bytes_s": 1.1e9}],   # or "10.0.0.2:7070"
        "secret_file": "/etc/nightshift/cluster-secret",
        "streams": 4,                 # parallel TCP streams per peer
        "fingerprint": "...",         # optional: accept only this model
        "local_dir": MODEL_DIR,       # optional: the disk copy (default: the model path)
        "disk_bandwidth_bytes_s": 2e9,  # optional: else a read probe measures it
        "report_file": "/tmp/pull.json",  # optional: where each source's share is written
    })

The manifest comes from the first peer that answers (and matches ``fingerprint`` and the local
``config.json``, where those exist). The sources (the peers, and the local disk with its
bandwidth probed) are ranked by estimated time. When the local disk comes first, vLLM's own
safetensors loader reads it (as fast, without a copy through our buffer). Otherwise the puller
pulls from the fastest, verifying each tensor, falling back source by source, and the tensors
go to ``model.load_weights`` as ``torch.frombuffer`` views of the pulled buffer. When no peer
answers, or every source fails, the local disk is loaded by vLLM's own loader. This is the only module of
``rdma_loader`` that imports torch or vLLM.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from vllm.model_executor.model_loader import register_model_loader
from vllm.model_executor.model_loader.base_loader import BaseModelLoader
from vllm.model_executor.model_loader.default_loader import DefaultModelLoader

from rdma_loader import LOAD_FORMAT
from rdma_loader.errors import ManifestError, NoSourceError, TransportError
from rdma_loader.manifest import Manifest, config_digest
from rdma_loader.protocol import read_secret
from rdma_loader.puller import PullResult, Puller
from rdma_loader.sources import DiskSource, PeerSource, Source, SourceKind
from rdma_loader.tcp import PeerConnection

log = logging.getLogger(__name__)

TORCH_DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "U16": torch.uint16,
    "F16": torch.float16, "BF16": torch.bfloat16, "I32": torch.int32, "U32": torch.uint32,
    "F32": torch.float32, "I64": torch.int64, "U64": torch.uint64, "F64": torch.float64,
    "F8_E5M2": torch.float8_e5m2, "F8_E4M3": torch.float8_e4m3fn,
}
_KEYS = {"peers", "secret_file", "streams", "fingerprint", "local_dir", "disk_bandwidth_bytes_s",
         "report_file", "timeout_s"}


@dataclasses.dataclass(frozen=True)
class PeerOptions:
    host: str
    port: int
    transport: str = "tcp"
    bandwidth_bytes_s: float | None = None


@dataclasses.dataclass(frozen=True)
class LoaderOptions:
    peers: tuple[PeerOptions, ...]
    secret: bytes
    streams: int = 4
    fingerprint: str | None = None
    local_dir: Path | None = None
    disk_bandwidth_bytes_s: float | None = None
    report_file: Path | None = None
    timeout_s: float = 30.0


def parse_options(extra: Any) -> LoaderOptions:
    """Validate ``model_loader_extra_config``; a ``ValueError`` names the field."""
    if not isinstance(extra, dict):
        raise ValueError(f"model_loader_extra_config: a dict is required for {LOAD_FORMAT}")
    unknown = set(extra) - _KEYS
    if unknown:
        raise ValueError(f"model_loader_extra_config: unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    peers = extra.get("peers") or []
    if not isinstance(peers, list):
        raise ValueError("model_loader_extra_config.peers: a list of 'host:port' or {host, port}")
    secret_file = extra.get("secret_file")
    if not secret_file:
        raise ValueError("model_loader_extra_config.secret_file: the cluster secret's file is required")
    try:
        secret = read_secret(Path(secret_file).read_bytes())
    except OSError as exc:
        raise ValueError(f"model_loader_extra_config.secret_file: cannot read {secret_file}: {exc}") from exc
    local = extra.get("local_dir")
    report = extra.get("report_file")
    return LoaderOptions(
        peers=tuple(_peer(p, i) for i, p in enumerate(peers)), secret=secret,
        streams=int(extra.get("streams", 4)), fingerprint=extra.get("fingerprint"),
        local_dir=Path(local) if local else None,
        disk_bandwidth_bytes_s=extra.get("disk_bandwidth_bytes_s"),
        report_file=Path(report) if report else None, timeout_s=float(extra.get("timeout_s", 30.0)))


def _peer(raw: Any, i: int) -> PeerOptions:
    where = f"model_loader_extra_config.peers[{i}]"
    if isinstance(raw, str):
        host, sep, port = raw.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"{where}: 'host:port' required, got {raw!r}")
        return PeerOptions(host, int(port))
    if isinstance(raw, dict) and isinstance(raw.get("host"), str) and isinstance(raw.get("port"), int):
        transport = raw.get("transport", "tcp")
        if transport not in ("tcp", "rdma"):
            raise ValueError(f"{where}.transport: 'tcp' or 'rdma', got {transport!r}")
        return PeerOptions(raw["host"], raw["port"], transport, raw.get("bandwidth_bytes_s"))
    raise ValueError(f"{where}: 'host:port' or {{'host': str, 'port': int}} required, got {raw!r}")


class PeerModelLoader(BaseModelLoader):
    def __init__(self, load_config) -> None:
        super().__init__(load_config)
        self.options = parse_options(load_config.model_loader_extra_config)

    def download_model(self, model_config) -> None:
        pass  # nothing to download: the bytes come from peers or the local disk

    def load_weights(self, model: torch.nn.Module, model_config) -> None:
        start = time.perf_counter()
        self._report: dict[str, Any] = {}
        try:
            self._load(model, model_config)
        finally:
            self._write_report({**self._report, "load_weights_s": time.perf_counter() - start})

    def _load(self, model: torch.nn.Module, model_config) -> None:
        local_dir = self.options.local_dir or Path(model_config.model)
        manifest = self._manifest(local_dir)
        if manifest is None:
            log.warning("no peer reachable: loading %s from the local disk", local_dir)
            self._report = {"fallback": "local-disk", "reason": "no peer answered", "sources": []}
            self._default_loader().load_weights(model, model_config)
            return
        puller = Puller(self._sources(local_dir))
        (estimate_s, best), *_ = puller.plan(manifest)
        if best.kind == SourceKind.LOCAL_DISK:  # vLLM reads it as fast, without our extra copy
            log.info("the local disk is the fastest source (%.2f s): vLLM's own loader reads it", estimate_s)
            self._report = {"fallback": "local-disk", "reason": "fastest source", "sources": [],
                            "plan": [{"label": s.label, "estimate_s": e} for e, s in puller.plan(manifest)]}
            self._default_loader().load_weights(model, model_config)
            return
        try:
            result = puller.pull(manifest)
        except NoSourceError as exc:  # transient: every source failed; the disk copy may still load
            log.warning("pull failed, loading %s from the local disk: %s", local_dir, exc)
            self._report = {"fallback": "local-disk", "reason": str(exc), "sources": []}
            self._default_loader().load_weights(model, model_config)
            return
        log.info("pulled %d bytes in %.2f s (%.2f GB/s): %s", manifest.total_bytes, result.seconds,
                 result.bytes_per_s / 1e9, ", ".join(f"{r.label} {r.verified_bytes}" for r in result.reports))
        self._report = report_json(result)
        model.load_weights(tensors_of(result))

    def _manifest(self, local_dir: Path) -> Manifest | None:
        wanted_config = config_digest(local_dir) if (local_dir / "config.json").is_file() else None
        for peer in self.options.peers:
            try:
                conn = PeerConnection(peer.host, peer.port, self.options.secret, self.options.timeout_s)
                try:
                    manifest = conn.manifest()
                finally:
                    conn.close()
            except (TransportError, ManifestError) as exc:  # this peer only; the next may answer
                log.warning("peer %s:%d: %s", peer.host, peer.port, exc)
                continue
            if self.options.fingerprint and manifest.fingerprint != self.options.fingerprint:
                log.warning("peer %s:%d serves %s, not %s", peer.host, peer.port, manifest.fingerprint,
                            self.options.fingerprint)
            elif wanted_config and manifest.config_digest != wanted_config:
                log.warning("peer %s:%d serves a model with another config.json", peer.host, peer.port)
            else:
                return manifest
        return None

    def _sources(self, local_dir: Path) -> list[Source]:
        o = self.options
        sources: list[Source] = [PeerSource(p.host, p.port, o.secret, p.transport, o.streams,
                                            p.bandwidth_bytes_s, timeout_s=o.timeout_s) for p in o.peers]
        if any(local_dir.glob("*.safetensors")):
            sources.append(DiskSource(local_dir, o.disk_bandwidth_bytes_s, probe=True))
        return sources

    def _default_loader(self) -> DefaultModelLoader:
        config = dataclasses.replace(self.load_config, load_format="safetensors", model_loader_extra_config={})
        return DefaultModelLoader(config)

    def _write_report(self, report: dict[str, Any]) -> None:
        if self.options.report_file is not None:
            path = self.options.report_file
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(report, indent=2))
            os.replace(tmp, path)


def tensors_of(result: PullResult) -> Iterator[tuple[str, torch.Tensor]]:
    """Each tensor as a zero-copy view of the pulled buffer, with its dtype and shape."""
    for tensor, view in result.tensors():
        dtype = TORCH_DTYPES[tensor.dtype]
        if tensor.length == 0:
            yield tensor.name, torch.empty(tensor.shape, dtype=dtype)
        else:
            yield tensor.name, torch.frombuffer(view, dtype=dtype).reshape(tensor.shape)


def report_json(result: PullResult) -> dict[str, Any]:
    return {"fingerprint": result.manifest.fingerprint, "total_bytes": result.manifest.total_bytes,
            "seconds": result.seconds, "refetched": list(result.refetched),
            "sources": [{**dataclasses.asdict(r), "kind": str(r.kind)} for r in result.reports]}


def register() -> None:
    """The ``vllm.general_plugins`` entry point: make ``load_format="nightshift-peer"`` known."""
    register_model_loader(LOAD_FORMAT)(PeerModelLoader)
