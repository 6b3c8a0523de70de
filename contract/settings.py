"""Configuration of the gateway, the workers and the Tiled watcher, from environment variables (BCDI_<NAME>) or a file.

One Settings class serves every process so that the queue parameters (key prefix, heartbeat, claim idle time,
delivery limit), the Tiled address and the allowed scan prefixes can never disagree between them; each setting has
exactly one environment name, BCDI_<FIELD NAME>. A file is given with BCDI_CONFIG_FILE (or --config): `.toml`,
`.json` or `.yaml` hold the same field names; `.env` files hold BCDI_* lines. Environment wins over file.
`use_settings` makes one Settings object the current one for the code a worker runs (the Tiled adapter reads the
allowed prefixes and the Tiled address from `current_settings()`).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (BaseSettings, DotEnvSettingsSource, JsonConfigSettingsSource, NoDecode,
                               PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource,
                               YamlConfigSettingsSource)

CONFIG_FILE_ENV = "BCDI_CONFIG_FILE"
_CONFIG_FILE: ContextVar[str | None] = ContextVar("bcdi_config_file", default=None)
_CURRENT: ContextVar["Settings | None"] = ContextVar("bcdi_current_settings", default=None)

KeyList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """All service settings; every field can be set as BCDI_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix="BCDI_", extra="ignore")

    # --- shared: Redis queue -------------------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis server holding queue and job records")
    key_prefix: str = Field("recon", pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
                            description="prefix of every Redis key (streams, job hashes, channels)")
    consumer_group: str = Field("gpu", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    heartbeat_s: float = Field(5.0, gt=0, description="a worker re-claims its running job this often")
    claim_idle_s: float = Field(15.0, gt=0, description="a job idle this long is taken over by another worker")
    max_deliveries: int = Field(3, ge=1, description="deliveries before a job goes to the dead-letter stream")
    job_ttl_s: int = Field(30 * 24 * 3600, ge=60, description="finished job records expire after this")

    # --- shared: Tiled ----------------------------------------------------------------------------------------
    tiled_url: str = Field("http://127.0.0.1:8010", description="Tiled server with raw scans and results")
    tiled_api_key: str | None = Field(None, description="Tiled key with write access (workers) / read (health)")
    tiled_public_url: str | None = Field(None, description="Tiled URL as browsers see it (default: tiled_url)")
    tiled_client_retry_attempts: int = Field(3, ge=1, description="tries per Tiled request inside the tiled "
                                             "client (TILED_RETRY_ATTEMPTS) before the worker's own retry")
    tiled_client_retry_timeout_s: float = Field(10.0, gt=0, description="TILED_RETRY_TIMEOUT of the tiled client")

    # --- gateway ---------------------------------------------------------------------------------------------
    submit_api_keys: KeyList = Field(default_factory=list, description="keys allowed to submit/cancel (and read)")
    read_api_keys: KeyList = Field(default_factory=list, description="keys allowed to read only")
    allowed_scan_prefixes: KeyList = Field(default_factory=lambda: ["raw"],
                                           description="first segment a scan's tiled_path must have (empty: any); "
                                                       "the gateway and the workers both check it")
    max_body_bytes: int = Field(16 * 1024, ge=256, description="larger request bodies get 413")
    health_timeout_s: float = Field(2.0, gt=0)
    sse_keepalive_s: float = Field(15.0, gt=0)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    # --- worker ----------------------------------------------------------------------------------------------
    runner: str = Field("workers.pipeline:run_job", description="module:function that runs one job")
    device: str = Field("auto", description="'auto' (CUDA when present, else CPU), 'cpu', 'cuda:0', ...")
    cpu_threads: int = Field(1, ge=0, description="torch CPU threads per worker (0: torch's default, one per "
                                                  "core); 1 by default: run one worker per core, as torch's "
                                                  "OpenMP threads stall on cores shared with other processes")
    block_ms: int = Field(1000, ge=10, description="longest wait for a new job before re-checking shutdown")
    shutdown_grace_s: float = Field(0.0, ge=0, description="on SIGTERM, let the current job run this long "
                                                          "before it is stopped and re-queued")
    retry_attempts: int = Field(4, ge=1, description="attempts of a job that fails on an unreachable service")
    retry_backoff_s: float = Field(1.0, ge=0, description="first back-off; doubles at each retry")
    retry_backoff_max_s: float = Field(30.0, ge=0)
    cancel_poll_s: float = Field(0.2, ge=0, description="the cancel flag is read from Redis at most this often")
    redis_retry_s: float = Field(300.0, ge=0, description="a worker retries recording a job's end this long "
                                                        "while Redis is unreachable")
    progress_interval_s: float = Field(0.25, ge=0, description="progress is written/published at most this often")

    # --- Tiled watcher (`bcdi-recon watch`) ----------------------------------------------------------------------
    gateway_url: str = Field("http://127.0.0.1:8000", description="gateway the watcher posts finished runs to")
    trigger_api_key: str | None = Field(None, description="gateway submit key the watcher posts with")
    trigger_tiled_path: str = Field("", description="Tiled container whose runs are watched ('' = the root, "
                                                    "where Bluesky's TiledWriter writes by default)")
    trigger_plan_names: KeyList = Field(default_factory=lambda: ["bcdi_rocking_scan"],
                                        description="plan names of BCDI scans")
    trigger_md_key: str = Field("bcdi", description="start-document key that also marks a BCDI run "
                                                    "('' = plan names only)")
    trigger_mode: str = Field("auto", pattern=r"^(auto|subscribe|poll)$",
                              description="auto (websocket, else polling), subscribe or poll")
    trigger_poll_s: float = Field(5.0, gt=0, description="polling period when the websocket is unavailable")

    @field_validator("submit_api_keys", "read_api_keys", "allowed_scan_prefixes", "trigger_plan_names", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        """Accept a comma-separated string (handy in env vars) as well as a list."""
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @model_validator(mode="after")
    def _check_timing(self) -> "Settings":
        if self.claim_idle_s <= self.heartbeat_s:
            raise ValueError(f"claim_idle_s ({self.claim_idle_s}) must exceed heartbeat_s ({self.heartbeat_s}), "
                             "or running jobs are stolen from live workers")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource):
        """init kwargs > environment > config file named by BCDI_CONFIG_FILE."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _CONFIG_FILE.get() or os.environ.get(CONFIG_FILE_ENV)
        if path:
            sources.append(_file_source(settings_cls, Path(path)))
        return tuple(sources)

    @property
    def browser_base(self) -> str:
        """Base URL of Tiled's web UI as seen from a browser."""
        return (self.tiled_public_url or self.tiled_url).rstrip("/")


def _file_source(settings_cls: type[BaseSettings], path: Path) -> PydanticBaseSettingsSource:
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    if suffix == ".json":
        return JsonConfigSettingsSource(settings_cls, json_file=path)
    if suffix in (".yaml", ".yml"):
        return YamlConfigSettingsSource(settings_cls, yaml_file=path)
    if suffix == ".env" or path.name.startswith(".env"):
        return DotEnvSettingsSource(settings_cls, env_file=path)
    raise ValueError(f"config file {path}: unknown type {suffix!r} (use .toml, .json, .yaml or .env)")


def load_settings(config_file: str | os.PathLike | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, an optional file (overrides BCDI_CONFIG_FILE) and keyword overrides."""
    token = _CONFIG_FILE.set(str(config_file) if config_file is not None else None)
    try:
        return Settings(**overrides)
    finally:
        _CONFIG_FILE.reset(token)


def current_settings() -> Settings:
    """The settings made current by `use_settings` (a worker running a job), else those of the environment."""
    active = _CURRENT.get()
    return active if active is not None else load_settings()


@contextmanager
def use_settings(settings: Settings) -> Iterator[Settings]:
    """Make `settings` current for the code run inside (this thread/context only)."""
    token = _CURRENT.set(settings)
    try:
        yield settings
    finally:
        _CURRENT.reset(token)
