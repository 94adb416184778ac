"""One validated settings object for every function.

Values come from environment variables prefixed ``POWERSENSE_`` and from secret files in
``/var/openfaas/secrets`` (OpenFaaS mounts one file per secret there; the file name is the field
name, e.g. ``clickhouse_password``).  A misconfigured function fails at start-up with a message that
names the offending variable.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from shared.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SECRETS_DIR = "/var/openfaas/secrets"


class Settings(BaseSettings):
    """Runtime configuration shared by all stages."""

    model_config = SettingsConfigDict(
        env_prefix="POWERSENSE_",
        extra="ignore",
        case_sensitive=False,
    )

    # --- ClickHouse -------------------------------------------------------------------------
    clickhouse_url: str | None = Field(
        default=None,
        description="http(s)://host:port of a ClickHouse server; unset = embedded chDB",
    )
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = SecretStr("")
    clickhouse_database: str = "electricity"
    chdb_path: Path = Field(default=REPO_ROOT / "var" / "chdb", description="embedded data dir")

    # --- artifacts (S3 / MinIO, or a local directory with the same interface) ----------------
    s3_endpoint_url: str | None = None
    s3_bucket: str = "powersense-models"
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    artifacts_dir: Path = REPO_ROOT / "var" / "artifacts"

    # --- source ----------------------------------------------------------------------------
    source_url: str = "https://odre.opendatasoft.com/api/explore/v2.1"
    source_dataset: str = "eco2mix-national-tr"
    source_page_size: int = Field(default=100, ge=1, le=100)
    source_max_window_records: int = Field(default=10000, ge=100, le=10000)
    source_timeout_s: float = Field(default=20.0, gt=0)
    source_retries: int = Field(default=5, ge=0, le=20)
    poll_overlap_hours: float = Field(default=24.0, ge=0)
    poll_lookahead_hours: float = Field(default=48.0, ge=0)
    poll_max_window_days: float = Field(default=31.0, gt=0)
    history_files: list[Path] = Field(
        default_factory=lambda: sorted((REPO_ROOT / "data" / "eco2mix").glob("eco2mix_national_*.csv.gz"))
    )
    history_until: str | None = Field(
        default=None, description="ISO timestamp: bootstrap loads history strictly before it"
    )

    # --- series / forecasting ---------------------------------------------------------------
    series_source: str = "eco2mix_national"
    series_metric: str = "consommation"
    forecast_resolution_min: Literal[15, 30, 60] = 30
    forecast_horizon_days: int = Field(default=7, ge=1, le=14)

    # --- query / security -------------------------------------------------------------------
    query_token: SecretStr | None = None
    gateway_user: str = "admin"
    gateway_password: SecretStr | None = None

    # --- observability ----------------------------------------------------------------------
    pushgateway_url: str | None = Field(default=None, description="host:port of a Prometheus Pushgateway")

    # --- logging ----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then OpenFaaS secret files named by the bare field name
        (``/var/openfaas/secrets/query_token``, not ``POWERSENSE_query_token``)."""
        secrets_dir = os.environ.get("POWERSENSE_SECRETS_DIR", DEFAULT_SECRETS_DIR)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if Path(secrets_dir).is_dir():
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir, env_prefix=""))
        return tuple(sources)

    @field_validator("clickhouse_url")
    @classmethod
    def _url_scheme(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @property
    def embedded(self) -> bool:
        """True when the store is the in-process chDB engine."""
        return self.clickhouse_url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Build the settings once per process; raise ConfigurationError naming the bad variables."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"POWERSENSE_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from exc
