"""The peer loader inside the real vLLM engine (CPU build, tiny random model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rdma_loader.conftest import ROOT

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("greedy_script.py")


def _run_greedy(model: Path, configs: dict[str, dict], tmp_path: Path) -> dict:
    pytest.importorskip("vllm")
    out = tmp_path / "greedy.json"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(model), json.dumps(configs), str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(out.read_text())


def test_engine_loaded_from_a_peer_generates_the_same_greedy_tokens(tiny_model, start_server, secret_file,
                                                                    tmp_path):
    """One script, three engines: vLLM's safetensors loader, the peer loader pulling from a
    weight server process, and the peer loader with its only peer down (local-disk fallback)."""
    server = start_server(tiny_model)
    dead = start_server(tiny_model)
    dead.kill()
    common = {"secret_file": str(secret_file), "streams": 2, "disk_bandwidth_bytes_s": 1e6}
    configs = {
        "peer": {**common, "peers": [{"host": "127.0.0.1", "port": server.port, "bandwidth_bytes_s": 1e12}],
                 "fingerprint": server.fingerprint, "report_file": str(tmp_path / "peer.json")},
        "fallback": {**common, "peers": [f"127.0.0.1:{dead.port}"], "timeout_s": 5,
                     "report_file": str(tmp_path / "fallback.json")},
    }

    tokens = _run_greedy(tiny_model, configs, tmp_path)

    assert all(len(t) > 0 for t in tokens["safetensors"])
    assert tokens["peer"] == tokens["safetensors"]
    assert tokens["fallback"] == tokens["safetensors"]
    pulled = json.loads((tmp_path / "peer.json").read_text())
    assert [s["kind"] for s in pulled["sources"]] == ["peer-tcp"]
    assert pulled["sources"][0]["verified_bytes"] == pulled["total_bytes"]
    assert "manifest sent" in server.log_text()
    assert json.loads((tmp_path / "fallback.json").read_text())["fallback"] == "local-disk"
