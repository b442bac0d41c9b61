from pathlib import Path

import pytest
from pydantic import ValidationError

from scheduler.settings import DEMO_MODEL, Settings, load_settings


def test_defaults_put_state_and_broker_in_sqlite_under_the_data_dir(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path}/nightshift.db"
    assert s.broker_url == f"sqla+sqlite:///{tmp_path}/broker.db"
    assert s.result_backend == f"db+sqlite:///{tmp_path}/results.db"
    assert s.api_url == "http://127.0.0.1:8000"
    assert DEMO_MODEL in s.models


def test_environment_overrides_the_toml_file(tmp_path, monkeypatch):
    config = tmp_path / "nightshift.toml"
    config.write_text('broker_url = "redis://from-file:6379/0"\napi_port = 9000\n'
                      '[models.qwen]\nsource = "Qwen/Qwen2.5-7B-Instruct"\nmax_model_len = 8192\n')
    monkeypatch.setenv("NIGHTSHIFT_CONFIG", str(config))
    monkeypatch.setenv("NIGHTSHIFT_BROKER_URL", "redis://from-env:6379/0")
    monkeypatch.setenv("NIGHTSHIFT_DATA_DIR", str(tmp_path))
    s = load_settings()
    assert s.broker_url == "redis://from-env:6379/0"
    assert s.api_port == 9000
    assert s.models["qwen"].max_model_len == 8192


def test_missing_config_file_named_explicitly_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NIGHTSHIFT_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_settings()


def test_unknown_setting_is_refused_by_name(tmp_path):
    with pytest.raises(ValidationError, match="brokr_url"):
        Settings(data_dir=tmp_path, brokr_url="x")


def test_heartbeat_must_be_shorter_than_the_lost_timeout(tmp_path):
    with pytest.raises(ValidationError, match="worker_lost_after_s"):
        Settings(data_dir=tmp_path, worker_heartbeat_s=30, worker_lost_after_s=10)


def test_visibility_timeout_outlasts_the_longest_task(tmp_path):
    s = Settings(data_dir=tmp_path, task_time_limit_s=3600)
    assert s.visibility_timeout_s > s.task_time_limit_s


def test_the_example_config_file_loads(tmp_path, monkeypatch):
    example = Path(__file__).resolve().parents[2] / "nightshift.example.toml"
    monkeypatch.setenv("NIGHTSHIFT_CONFIG", str(example))
    monkeypatch.setenv("NIGHTSHIFT_DATA_DIR", str(tmp_path))
    assert load_settings().models["qwen-7b"].max_model_len == 8192


def test_the_example_config_loads_with_every_option_uncommented(tmp_path):
    import re
    import tomllib

    text = (Path(__file__).resolve().parents[2] / "nightshift.example.toml").read_text()
    uncommented = re.sub(r"(?m)^# (\[|[a-z_]+ =)", r"\1", text)
    settings = Settings(**{**tomllib.loads(uncommented), "data_dir": tmp_path})
    assert settings.cluster_secret_file is not None and not str(settings.cluster_secret_file).startswith("~")
    assert settings.windows[0].start == "22:00" and settings.yield_policy.max_suspend_s == 1800
    assert settings.models["qwen-7b"].size_gb == 15.2
