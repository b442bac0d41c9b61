"""Nightshift's one settings class.

Values come, highest priority first, from ``NIGHTSHIFT_*`` environment variables (nested
fields with ``__``, e.g. ``NIGHTSHIFT_MODELS__qwen__SOURCE``), from the TOML file named by
``NIGHTSHIFT_CONFIG`` (default ``nightshift.toml`` in the working directory, if present), and
from the defaults below. Nothing reads the environment at import time: call ``get_settings()``.
"""

from __future__ import annotations

import os
import socket
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEMO_MODEL = "tiny-random"
"""Alias of the small random model the worker generates on first use, so a fresh install
runs end to end without downloading anything. Its output is gibberish by design."""


class ModelSpec(BaseModel):
    """One entry of the model catalog: an alias users name, mapped to weights vLLM loads."""

    source: str = Field(description="Hugging Face model id or a local model directory.")
    dtype: str = Field(default="auto", description="vLLM dtype: auto, bfloat16, float16, float32.")
    max_model_len: int = Field(default=4096, gt=0, description="Context length (prompt + output).")
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments passed to vllm.LLM as is."
    )
    size_gb: float | None = Field(default=None, gt=0, description="Weights to move on a swap; "
                                  "measured from a local directory's safetensors files if empty.")
    vram_gib: float | None = Field(default=None, gt=0, description="GPU memory the model needs "
                                   "(weights + KV cache); 1.2 x its size if empty.")


class WindowSpec(BaseModel):
    """One night window: when it opens (``start`` HH:MM on ``days``, or a 5-field ``cron``
    expression), when it ends (``end`` HH:MM, the first one after the opening) and in which
    time zone (``tz``; empty = this machine's local zone). Checked by ``scheduler.window``."""

    model_config = ConfigDict(extra="forbid")

    start: str | None = Field(default="22:00", description="HH:MM the window opens.")
    end: str = Field(default="07:00", description="HH:MM the window closes (next day if earlier).")
    days: str = Field(default="*", description="cron day_of_week: '*', 'mon-fri', 'sat,sun'.")
    cron: str | None = Field(default=None, description="5-field crontab for the opening; replaces start/days.")
    tz: str = Field(default="", description="IANA zone such as Europe/Berlin; empty = local.")


PROBE_KINDS = ("nvml", "logind", "x11", "programs", "load", "file")


class YieldSpec(BaseModel):
    """When a worker gives the GPU back to its owner (see ``workers.yielding``)."""

    model_config = ConfigDict(extra="forbid")

    probes: list[str] = Field(default_factory=lambda: ["nvml", "logind", "x11", "programs"],
                              description="Probe kinds: nvml, logind, x11, programs, load, file.")
    start_idle_s: float = Field(default=600.0, ge=0, description="Start only after this long idle.")
    grace_s: float = Field(default=10.0, ge=0, description="Owner active this long before suspending.")
    resume_idle_s: float = Field(default=300.0, ge=0, description="Idle this long before resuming.")
    max_suspend_s: float = Field(default=1800.0, gt=0, description="Give the task back after this.")
    poll_s: float = Field(default=2.0, gt=0, description="How often the probes are read.")
    programs: list[str] = Field(default_factory=lambda: ["steam", "blender", "obs", "davinci-resolve"],
                                description="Process names that claim the GPU when running.")
    max_load: float = Field(default=0.0, ge=0, description="'load' probe: 1-min load above this is the owner.")
    presence_file: str = Field(default="", description="'file' probe: the owner is active while it exists.")
    gpu_index: int = Field(default=0, ge=0, description="Which GPU NVML watches.")

    @model_validator(mode="after")
    def _probes_are_known(self) -> YieldSpec:
        for i, kind in enumerate(self.probes):
            if kind not in PROBE_KINDS:
                raise ValueError(f"yield_policy.probes[{i}]: unknown probe {kind!r}; "
                                 f"allowed: {', '.join(PROBE_KINDS)}")
        if "file" in self.probes and not self.presence_file:
            raise ValueError("yield_policy.presence_file: the 'file' probe needs a path")
        if "load" in self.probes and self.max_load <= 0:
            raise ValueError("yield_policy.max_load: the 'load' probe needs a limit above 0, e.g. 4.0")
        return self


def _default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "nightshift"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NIGHTSHIFT_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str = Field(default="", description="SQLAlchemy URL; SQLite in data_dir if empty.")
    broker_url: str = Field(default="", description="Celery broker; SQLite in data_dir if empty.")
    result_backend: str = Field(default="", description="Celery results; SQLite if empty.")

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_url: str = Field(default="", description="Where the CLI finds the API; from host/port if empty.")
    api_token: str = Field(default="", description="The CLI's API token; read from data_dir/api-token "
                           "(written by the web process) if empty.")
    cookie_secure: bool = Field(default=False, description="Send the session cookie over HTTPS only "
                                "(set it when a TLS proxy fronts the pages).")
    session_max_age_s: int = Field(default=14 * 24 * 3600, gt=0)

    models: dict[str, ModelSpec] = Field(default_factory=dict)
    demo_model: bool = Field(default=True, description=f"Offer the generated '{DEMO_MODEL}' model.")

    max_batch_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    max_batch_lines: int = Field(default=50_000, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    task_time_limit_s: int = Field(default=12 * 3600, gt=0)
    dispatch_interval_s: float = Field(default=2.0, gt=0)
    worker_name: str = Field(default_factory=lambda: f"worker@{socket.gethostname()}")
    worker_heartbeat_s: float = Field(default=10.0, gt=0)
    worker_lost_after_s: float = Field(default=60.0, gt=0)
    result_flush_s: float = Field(default=1.0, gt=0, description="How often a worker saves lines.")

    # Limits of the patch loop, per TODO item.
    patch_rounds: int = Field(default=2, ge=1, le=10)
    patch_candidates: int = Field(default=4, ge=1, le=16)
    patch_wall_time_s: float = Field(default=1800.0, gt=0)
    patch_test_time_s: float = Field(default=600.0, gt=0)
    patch_max_tokens: int = Field(default=200_000, gt=0)

    # vLLM engine options shared by every model on this worker.
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    enforce_eager: bool = False

    # The night window (scheduler.window) and yielding the GPU (workers.yielding).
    windows: list[WindowSpec] = Field(default_factory=lambda: [WindowSpec()])
    worker_windows: dict[str, list[WindowSpec]] = Field(
        default_factory=dict, description="Per worker name: windows replacing `windows`.")
    always_open: bool = Field(default=False, description="Ignore windows: work at any hour.")
    ready_by: str = Field(default="07:00", description="Morning deadline, HH:MM in the window's zone: "
                          "tasks without a deadline of their own are planned to be done by then.")
    owner_weights: dict[str, PositiveFloat] = Field(default_factory=dict, description="Share of the night per "
                                            "owner (weighted fair share); owners not named weigh 1.")
    yield_policy: YieldSpec = Field(default_factory=YieldSpec)

    # Weights from peers (rdma_loader): off until a cluster secret is configured.
    cluster_secret_file: Path | None = Field(default=None, description="File with the secret every "
                                             "machine shares (16+ characters); enables peer pulls.")
    weight_peers: list[str] = Field(default_factory=list, description="Static weight servers, host:port.")
    weight_registry_url: str = Field(default="", description="redis:// URL of the peer registry; "
                                     "the broker's Redis if empty and the broker is Redis.")
    serve_resident_weights: bool = Field(default=True, description="The worker serves its resident "
                                         "model to peers (needs cluster_secret_file).")
    weight_server_host: str = Field(default="127.0.0.1", description="Where the worker's weight "
                                    "server listens; 0.0.0.0 for peers on other machines.")
    weight_server_port: int = Field(default=0, ge=0, le=65535, description="0: any free port (advertised).")
    weight_advertise_host: str = Field(default="", description="Host peers use to reach this worker; "
                                       "the machine's name if empty and the server binds 0.0.0.0.")

    @field_validator("models")
    @classmethod
    def _aliases_are_plain(cls, models: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
        for alias in models:
            if not alias or any(ch.isspace() for ch in alias):
                raise ValueError(f"model alias {alias!r} must be a non-empty word without spaces")
        return models

    @model_validator(mode="after")
    def _fill_derived(self) -> Settings:
        data = self.data_dir.expanduser().resolve()
        self.data_dir = data
        self.database_url = self.database_url or f"sqlite:///{data / 'nightshift.db'}"
        self.broker_url = self.broker_url or f"sqla+sqlite:///{data / 'broker.db'}"
        self.result_backend = self.result_backend or f"db+sqlite:///{data / 'results.db'}"
        self.api_url = self.api_url or f"http://{self.api_host}:{self.api_port}"
        if self.cluster_secret_file is not None:
            self.cluster_secret_file = self.cluster_secret_file.expanduser()
        if not self.weight_registry_url and self.broker_url.startswith(("redis://", "rediss://")):
            self.weight_registry_url = self.broker_url
        if self.demo_model and DEMO_MODEL not in self.models:
            self.models[DEMO_MODEL] = ModelSpec(
                source=str(data / "models" / DEMO_MODEL), dtype="float32", max_model_len=1024
            )
        if self.worker_lost_after_s <= self.worker_heartbeat_s:
            raise ValueError(
                f"worker_lost_after_s ({self.worker_lost_after_s}) must be longer than "
                f"worker_heartbeat_s ({self.worker_heartbeat_s})"
            )
        return self

    @model_validator(mode="after")
    def _windows_are_usable(self) -> Settings:
        from scheduler.errors import WindowConfigError
        from scheduler.window import scopes

        try:
            scopes(self)
        except WindowConfigError as exc:  # a ValueError, so pydantic names it like any other
            raise ValueError(str(exc)) from exc
        return self

    @property
    def visibility_timeout_s(self) -> int:
        """Longer than the longest task, so a broker never redelivers a task that still runs."""
        return self.task_time_limit_s + 3600

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init values; the environment overrides it.
        return env_settings, init_settings, file_secret_settings


def load_settings() -> Settings:
    """Read settings now (TOML file, then environment), bypassing the cache."""
    path = Path(os.environ.get("NIGHTSHIFT_CONFIG", "nightshift.toml"))
    values: dict[str, Any] = {}
    if path.is_file():
        with path.open("rb") as fh:
            values = tomllib.load(fh)
    elif "NIGHTSHIFT_CONFIG" in os.environ:
        raise FileNotFoundError(f"NIGHTSHIFT_CONFIG names {str(path)!r}, which is not a file")
    return Settings(**values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
