"""The worker's choice of load format for a model switch."""

from __future__ import annotations

from types import SimpleNamespace

from rdma_loader import LOAD_FORMAT
from rdma_loader.registry import Advertisement, StaticRegistry
from scheduler.settings import ModelSpec
from workers.weights import peer_load_args


def _settings(**fields):
    return SimpleNamespace(**{"cluster_secret_file": None, "weight_peers": [], "weight_registry_url": "",
                              "worker_name": "w", **fields})


def test_no_secret_or_no_peers_keeps_the_default_loader(tmp_path):
    spec = ModelSpec(source=str(tmp_path))
    assert peer_load_args("m", spec, _settings(weight_peers=["10.0.0.2:7070"])) == {}
    assert peer_load_args("m", spec, _settings(cluster_secret_file=tmp_path / "s")) == {}


def test_peers_from_settings_and_registry_go_to_the_peer_loader(tmp_path):
    spec = ModelSpec(source=str(tmp_path))
    registry = StaticRegistry([Advertisement("f" * 64, "10.0.0.3", 7071, bandwidth_bytes_s=1e9,
                                             model="m")])
    args = peer_load_args("m", spec, _settings(cluster_secret_file=tmp_path / "s", weight_peers=["10.0.0.2:7070"]),
                          registry)
    assert args["load_format"] == LOAD_FORMAT
    extra = args["model_loader_extra_config"]
    assert extra["peers"] == ["10.0.0.2:7070", {"host": "10.0.0.3", "port": 7071, "bandwidth_bytes_s": 1e9,
                                                "transport": "tcp"}]
    assert extra["secret_file"] == str(tmp_path / "s") and extra["local_dir"] == str(tmp_path)


def test_a_model_that_names_its_own_load_format_keeps_it(tmp_path):
    spec = ModelSpec(source=str(tmp_path), engine_args={"load_format": "safetensors"})
    assert peer_load_args("m", spec, _settings(cluster_secret_file=tmp_path / "s", weight_peers=["h:1"])) == {}


def test_the_resident_model_is_served_to_peers_and_withdrawn_on_the_next_swap(settings, tmp_path):
    from rdma_loader.random_model import write_random_model
    from rdma_loader.tcp import PeerConnection
    from workers.weights import ResidentServer

    secret = tmp_path / "secret"
    secret.write_text("a cluster secret of some length")
    first = write_random_model(tmp_path / "first", 2 << 20)
    second = write_random_model(tmp_path / "second", 1 << 20, seed=1)
    settings = settings.model_copy(update={"cluster_secret_file": secret, "models": {
        "first": ModelSpec(source=str(first)), "second": ModelSpec(source=str(second)),
        "hub": ModelSpec(source="org/not-local")}})
    registry = StaticRegistry()
    served = ResidentServer(settings, registry)
    try:
        served.serve("first")
        (ad,) = registry.lookup_model("first")
        assert ad.host == "127.0.0.1" and ad.port == served.server.port
        conn = PeerConnection(ad.host, ad.port, secret.read_bytes().strip())
        assert conn.manifest().fingerprint == ad.fingerprint
        conn.close()
        served.serve("second")
        assert registry.lookup_model("first") == () and len(registry.lookup_model("second")) == 1
        served.serve("hub")  # nothing local to serve: the previous one still stops
        assert served.server is None and registry.lookup_model("second") == ()
    finally:
        served.stop()
