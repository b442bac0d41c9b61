"""The worker's choice of load format for a model switch."""

from __future__ import annotations

from types import SimpleNamespace

from rdma_loader import LOAD_FORMAT
from rdma_loader.registry import Advertisement, StaticRegistry
from scheduler.settings import ModelSpec
from workers.weights import peer_load_args


def _settings(**fields):
    return SimpleNamespace(**{"cluster_secret_file": None, "weight_peers": [], "weight_registry_url": "",
                              **fields})


def test_no_secret_or_no_peers_keeps_the_default_loader(tmp_path):
    spec = ModelSpec(source=str(tmp_path))
    assert peer_load_args(spec, _settings(weight_peers=["10.0.0.2:7070"])) == {}
    assert peer_load_args(spec, _settings(cluster_secret_file=tmp_path / "s")) == {}


def test_peers_from_settings_and_registry_go_to_the_peer_loader(tmp_path):
    spec = ModelSpec(source=str(tmp_path))
    registry = StaticRegistry([Advertisement("f" * 64, "10.0.0.3", 7071, bandwidth_bytes_s=1e9,
                                             model=str(tmp_path))])
    args = peer_load_args(spec, _settings(cluster_secret_file=tmp_path / "s", weight_peers=["10.0.0.2:7070"]),
                          registry)
    assert args["load_format"] == LOAD_FORMAT
    extra = args["model_loader_extra_config"]
    assert extra["peers"] == ["10.0.0.2:7070", {"host": "10.0.0.3", "port": 7071, "bandwidth_bytes_s": 1e9,
                                                "transport": "tcp"}]
    assert extra["secret_file"] == str(tmp_path / "s") and extra["local_dir"] == str(tmp_path)


def test_a_model_that_names_its_own_load_format_keeps_it(tmp_path):
    spec = ModelSpec(source=str(tmp_path), engine_args={"load_format": "safetensors"})
    assert peer_load_args(spec, _settings(cluster_secret_file=tmp_path / "s", weight_peers=["h:1"])) == {}
