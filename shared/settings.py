"""One validated settings object for every function.

Values come from environment variables prefixed ``POWERSENSE_`` and from secret files in
``/var/openfaas/secrets`` (OpenFaaS mounts one file per secret there; the file name is the field
name, e.g. ``clickhouse_password``).  A misconfigured function fails at start-up with a message that
names the offending variable.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from shared.errors import ConfigurationError
from shared.schema import CLUSTER_NAME, DATABASE_NAME

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SECRETS_DIR = "/var/openfaas/secrets"


def shipped_history_files() -> list[Path]:
    """The shipped real history, one file a year (``data/eco2mix/eco2mix_national_YYYY.csv.gz``), oldest first."""
    return sorted((REPO_ROOT / "data" / "eco2mix").glob("eco2mix_national_*.csv.gz"))


# --- AWS Secrets Manager (Lambda) --------------------------------------------------------------
# Settings that may be given as ``POWERSENSE_<NAME>_SECRET_ARN`` instead of a value or a secret file.
SECRET_ARN_FIELDS = ("clickhouse_password", "query_token", "admin_token")
SECRET_ARN_PATTERN = r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$"
_SECRET_ARN = re.compile(SECRET_ARN_PATTERN)
# S3 bucket naming rules (3–63 characters: lowercase letters, digits, dots, hyphens; letter/digit at the ends).
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_secrets_client_factory: Callable[[str], Any] | None = None


def set_secrets_client_factory(factory: Callable[[str], Any] | None) -> None:
    """Replace how a Secrets Manager client is built (``factory(region)``; None = boto3). For tests only:
    AWS is unreachable from the test machine."""
    global _secrets_client_factory
    _secrets_client_factory = factory
    read_aws_secret.cache_clear()


def secrets_client_config() -> Any:
    """botocore's configuration of the Secrets Manager client: a few seconds per attempt, two attempts.

    botocore waits 60 s to connect and 60 s per read, several attempts: in subnets with neither a NAT gateway nor
    a Secrets Manager endpoint (the commonest Lambda network mistake) each read hung for minutes, past Lambda's
    10 s init phase and every stage's timeout, so the function died "Task timed out" without the start-up error
    that names the variable. 2 × (2 + 2) s fits in the init phase, with the imports before it."""
    from botocore.config import Config

    return Config(connect_timeout=2, read_timeout=2, retries={"total_max_attempts": 2, "mode": "standard"})


@lru_cache(maxsize=32)
def read_aws_secret(arn: str, variable: str) -> str:
    """The SecretString of a Secrets Manager secret, fetched once per process (cached).

    ``variable`` names the setting in the error: any failure stops start-up with ConfigurationError.
    """
    if not _SECRET_ARN.fullmatch(arn):
        raise ConfigurationError(f"invalid configuration: {variable}: not a Secrets Manager secret ARN")
    region = arn.split(":")[3]
    try:
        if _secrets_client_factory is not None:
            client = _secrets_client_factory(region)
        else:
            import boto3  # the default credential chain: the Lambda function's role

            client = boto3.client("secretsmanager", region_name=region, config=secrets_client_config())
        value = client.get_secret_value(SecretId=arn).get("SecretString")
    except Exception as exc:  # botocore raises many types; one clear start-up error
        raise ConfigurationError(f"invalid configuration: {variable}: cannot read the secret: {exc}") from exc
    if not value:
        raise ConfigurationError(f"invalid configuration: {variable}: the secret has no SecretString")
    return str(value)



def _list_from_text(v: Any) -> Any:
    """A list variable as a user writes it: comma-separated (POWERSENSE_WEATHER_MODELS=meteofrance_seamless,
    ecmwf_ifs025, as the README does) or a JSON list. pydantic-settings read only JSON, and its error named no
    variable."""
    if not isinstance(v, str):
        return v
    text = v.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list ({exc.msg}); or give the values comma-separated") from None
    return [item.strip() for item in text.split(",") if item.strip()]


# the type of every list setting: read by _list_from_text, not decoded as JSON by the settings sources
TextList = Annotated[list[str], NoDecode, BeforeValidator(_list_from_text)]
PathList = Annotated[list[Path], NoDecode, BeforeValidator(_list_from_text)]


def _int_from_text(v: Any) -> Any:
    """An integer choice as the environment gives it (the text ``"60"``): a ``Literal[15, 30, 60]`` compares the
    value as it comes, so the text of an allowed value failed as if it were not one."""
    return int(v) if isinstance(v, str) and re.fullmatch(r"\s*[0-9]+\s*", v) else v  # ASCII digits only


# the grid steps a series can be forecast on (minutes)
GridStep = Annotated[Literal[15, 30, 60], BeforeValidator(_int_from_text)]
# a series' source or metric: a plain name, since the dashboards' constants and dbt's vars write it into SQL literals
SERIES_NAME = r"^[A-Za-z0-9_.:-]+$"


class _HyphenatedSecrets(PydanticBaseSettingsSource):
    """Secret files named with hyphens (``clickhouse-password`` for field ``clickhouse_password``).

    On Kubernetes an OpenFaaS secret is a Secret object of the same name, and object names cannot
    contain ``_`` (RFC 1123; github:openfaas/faas-netes pkg/k8s/secrets.go names the object and its
    key after the secret), so a stack valid on faasd and Kubernetes uses hyphenated names.  The
    underscore file wins when both exist (it comes first in the sources).
    """

    def __init__(self, settings_cls: type[BaseSettings], secrets_dir: Path) -> None:
        super().__init__(settings_cls)
        self.secrets_dir = secrets_dir

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # noqa: D102
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name in self.settings_cls.model_fields:
            path = self.secrets_dir / name.replace("_", "-")
            if "_" in name and (path.exists() or path.is_symlink()):
                found[name] = read_secret_file(path, name)
        return found


def http_url(v: str) -> str:
    """``v`` stripped of surrounding spaces and a trailing ``/``; ValueError unless it is an http(s) URL naming a host
    (and a numeric port, if any). Checked at start-up: a URL without its scheme started the function and failed every
    run after its retries (a 502 that looks like an outage), ``http://`` alone connected to localhost."""
    v = v.strip()
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{v!r}: must start with http:// or https://")
    try:
        parts.port  # noqa: B018 -- raises on a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"{v!r}: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"{v!r}: names no host")
    return v.rstrip("/")


def five_field_cron(schedule: str) -> bool:
    """True for a cron expression as the cron connector reads it: five fields (a sixth, seconds, would fire 60 times
    as often). One check for the settings (``POWERSENSE_DETECT_SCHEDULE``) and the stack's schedules."""
    from croniter import croniter  # light (dateutil), imported when a schedule is checked

    return len(schedule.split()) == 5 and bool(croniter.is_valid(schedule))


def read_secret_file(path: Path, name: str) -> str:
    """The text of a secret file, stripped of the newline an editor or ``kubectl create secret --from-file`` leaves;
    a file that exists but cannot be read as text (a directory, a dangling link, no permission, bytes that are not
    UTF-8, e.g. ``openssl rand 24 > file``) stops the start-up naming it, rather than a bare traceback or being
    skipped."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigurationError(f"invalid configuration: POWERSENSE_{name.upper()}: secret file {path} cannot "
                                 f"be read as UTF-8 text ({reason})") from exc


# Settings an earlier release read and this one does not (found by diffing shared/settings.py over its history): set
# in the environment, they stop the start-up with what replaced them, rather than being ignored.
RETIRED_SETTINGS = {
    "POWERSENSE_DETECT_LEVEL_SHIFT_MIN_STEPS": "the level-shift span is a time since 2026-12-05, "
    "POWERSENSE_DETECT_LEVEL_SHIFT_MIN_MINUTES (default 120; 8 steps of 15 min were 120 minutes)",
    "POWERSENSE_SOURCE_MAX_WINDOW_RECORDS": "removed on 2026-12-01 (keyset paging has no offset cap); unset it",
}


class Settings(BaseSettings):
    """Runtime configuration shared by all stages."""

    model_config = SettingsConfigDict(
        env_prefix="POWERSENSE_",
        extra="ignore",
        case_sensitive=False,
        # "inf" or 1e400 passed every bound (> 0) and broke each run with an OverflowError
        allow_inf_nan=False,
    )

    # --- ClickHouse -------------------------------------------------------------------------
    clickhouse_url: str | None = Field(
        default=None,
        description="http(s)://host:port of a ClickHouse server; unset or empty = embedded chDB (refused on AWS "
                    "Lambda and in the function image)",
    )
    clickhouse_user: str = Field(default="default", description="ClickHouse user (query: the read-only user)")
    clickhouse_password: SecretStr = Field(default=SecretStr(""), description="secret file clickhouse_password")
    clickhouse_timeout_s: float = Field(
        default=110.0, gt=0, le=3600,
        description="seconds one ClickHouse statement may wait for the server's answer (a server that accepts and "
                    "never answers fails the statement with StoreError after it; the server stops the statement a "
                    "second before, max_execution_time, unless its profile forbids or sets less). Below the function's "
                    "exec_timeout, so the typed 503 comes before the watchdog's 504: openfaas-stack.yml and "
                    "template.yaml set 55 (poll: 60 s) and 25 for query (30 s)")
    clickhouse_database: str = Field(
        default="electricity", pattern=rf"^{DATABASE_NAME}$",
        description="database of every table (a plain identifier: it is written into the DDL)",
    )
    clickhouse_cluster: str = Field(
        default="", pattern=rf"^(?:{CLUSTER_NAME})?$",
        description="cluster name (remote_servers) of a sharded, replicated server: the schema is applied in its "
        "cluster rendering (python -m shared ddl --cluster NAME); empty = single server or chDB",
    )
    chdb_path: Path = Field(default=REPO_ROOT / "var" / "chdb", description="embedded data dir")

    # --- artifacts (S3 / MinIO, or a local directory with the same interface) ----------------
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (SeaweedFS/MinIO); unset with POWERSENSE_S3_BUCKET set = AWS "
        "S3 through the default credential chain (Lambda role); both unset = local artifacts_dir"
    )
    s3_bucket: str = Field(
        default="powersense-models",
        description="bucket of model artifacts; setting it or the endpoint selects S3, with no local fallback",
    )
    s3_region: str = Field(default="us-east-1", description="S3 region (MinIO ignores it)")
    s3_access_key_id: SecretStr | None = Field(default=None, description="secret file s3_access_key_id")
    s3_secret_access_key: SecretStr | None = Field(default=None, description="secret file s3_secret_access_key")
    # the query function reads models and lists them, nothing more: it is given SeaweedFS's read-only identity
    # (deploy/seaweedfs/s3.json) under these names and uses it when no s3_access_key_id is set; it held the admin
    # keys, which can overwrite current.json and delete every model
    s3_reader_access_key_id: SecretStr | None = Field(default=None, description="secret file "
                                                      "s3_reader_access_key_id (read-only S3 identity: query)")
    s3_reader_secret_access_key: SecretStr | None = Field(default=None, description="secret file "
                                                          "s3_reader_secret_access_key")
    artifacts_dir: Path = Field(default=REPO_ROOT / "var" / "artifacts", description="local artifact store")

    # --- AWS (Lambda, template.yaml) ---------------------------------------------------------
    # Secrets are read at run time from AWS Secrets Manager (ARNs in the environment, never values).
    clickhouse_password_secret_arn: str | None = Field(
        default=None, pattern=SECRET_ARN_PATTERN,
        description="AWS Secrets Manager ARN whose SecretString is clickhouse_password (read once at start-up)",
    )
    query_token_secret_arn: str | None = Field(
        default=None, pattern=SECRET_ARN_PATTERN,
        description="AWS Secrets Manager ARN whose SecretString is query_token (read once at start-up)",
    )
    admin_token_secret_arn: str | None = Field(
        default=None, pattern=SECRET_ARN_PATTERN,
        description="AWS Secrets Manager ARN whose SecretString is admin_token (read once at start-up)",
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_aws(cls, data: Any) -> Any:
        """Replace each ``<secret>_secret_arn`` by the secret it names (before field validation)."""
        if not isinstance(data, dict):
            return data
        for name in SECRET_ARN_FIELDS:
            arn = data.get(f"{name}_secret_arn")
            if not arn:
                continue
            variable = f"POWERSENSE_{name.upper()}_SECRET_ARN"
            if data.get(name):
                raise ConfigurationError(
                    f"invalid configuration: {variable}: POWERSENSE_{name.upper()} is set too; set one of them"
                )
            data = {**data, name: read_aws_secret(str(arn), variable)}
        return data

    @model_validator(mode="after")
    def _no_retired_setting(self) -> Settings:
        # pydantic-settings ignores an environment variable that names no field: a renamed setting would silently
        # fall back to its default on upgrade (an operator's tuning lost without a word)
        retired = sorted(name for name in os.environ if name.upper() in RETIRED_SETTINGS)
        if retired:
            raise ValueError("; ".join(f"{name} is no longer read: {RETIRED_SETTINGS[name.upper()]}"
                                       for name in retired))
        return self

    @model_validator(mode="after")
    def _s3_reader_keys(self) -> Settings:
        # before _artifacts_backend_usable, which checks the pair the store will use
        if self.s3_access_key_id is None and self.s3_secret_access_key is None:
            self.s3_access_key_id = self.s3_reader_access_key_id
            self.s3_secret_access_key = self.s3_reader_secret_access_key
        return self

    @model_validator(mode="after")
    def _artifacts_backend_usable(self) -> Settings:
        """S3 selected → its configuration must be usable; on Lambda S3 is mandatory (no silent local disk)."""
        on_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))  # set by the Lambda runtime
        # the function image sets `fprocess` (template/powersense-python/Dockerfile; faas-cli deploy sends
        # template.yml's as the same variable): there an unset or empty URL (compose's ${VAR:-}) was embedded chDB in
        # each container, every function with its own copy of the data, lost on restart, and nothing said so
        in_image = bool(os.environ.get("fprocess"))  # noqa: SIM112 (the watchdog's name)
        if (on_lambda or in_image) and self.clickhouse_url is None:
            where = ("on AWS Lambda (embedded chDB would keep the data on the function's ephemeral disk)" if on_lambda
                     else "in a deployed function (embedded chDB would keep the data on the container's disk, one "
                          "copy per function)")
            raise ConfigurationError(f"invalid configuration: POWERSENSE_CLICKHOUSE_URL: must be set {where}")
        if self.artifacts_backend == "local":
            if on_lambda:
                raise ConfigurationError(
                    "invalid configuration: POWERSENSE_S3_BUCKET: must be set on AWS Lambda (the local "
                    "artifacts_dir would be the function's ephemeral disk: models lost on every cold start)"
                )
            return self
        if self.s3_endpoint_url:
            try:
                self.s3_endpoint_url = http_url(self.s3_endpoint_url)
            except ValueError as exc:
                raise ConfigurationError(f"invalid configuration: POWERSENSE_S3_ENDPOINT_URL: {exc}") from None
        if not BUCKET_NAME.fullmatch(self.s3_bucket):
            raise ConfigurationError(
                f"invalid configuration: POWERSENSE_S3_BUCKET: {self.s3_bucket!r} is not a valid bucket name"
            )
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ConfigurationError(
                "invalid configuration: POWERSENSE_S3_ACCESS_KEY_ID, POWERSENSE_S3_SECRET_ACCESS_KEY: set both "
                "or neither (neither = the default AWS credential chain, e.g. the Lambda role)"
            )
        return self

    @model_validator(mode="after")
    def _artifacts_shared_with_a_server(self) -> Settings:
        # With a ClickHouse server the functions run in separate containers: a local artifacts_dir is each one's own
        # disk, so forecast's models would be invisible to query and lost on restart. Allowed only when the
        # operator names a directory (one every function mounts).
        if (self.clickhouse_url is not None and self.artifacts_backend == "local"
                and "artifacts_dir" not in self.model_fields_set):
            raise ConfigurationError(
                "invalid configuration: POWERSENSE_S3_BUCKET: with a ClickHouse server (POWERSENSE_CLICKHOUSE_URL) "
                "the model artifacts need a store every function reads: set POWERSENSE_S3_ENDPOINT_URL and/or "
                "POWERSENSE_S3_BUCKET, or POWERSENSE_ARTIFACTS_DIR to a directory all the functions share"
            )
        return self

    @property
    def artifacts_backend(self) -> Literal["s3", "local"]:
        """``s3`` when an endpoint or a bucket is configured (then never a local fallback), else ``local``."""
        return "s3" if self.s3_endpoint_url or "s3_bucket" in self.model_fields_set else "local"
    # --- end AWS -----------------------------------------------------------------------------

    # --- source ----------------------------------------------------------------------------
    source_url: str = Field(
        default="https://odre.opendatasoft.com/api/explore/v2.1", description="ODRÉ Explore API v2.1 base URL"
    )
    source_dataset: str = Field(default="eco2mix-national-tr", description="ODRÉ dataset polled")
    source_page_size: int = Field(default=100, ge=1, le=100, description="records per page (API cap 100)")
    source_timeout_s: float = Field(default=20.0, gt=0, description="HTTP timeout per request")
    source_retries: int = Field(default=5, ge=0, le=20, description="retries on timeout, 429, 5xx")
    poll_overlap_hours: float = Field(default=24.0, ge=0, description="re-polled span before the watermark (revisions)")
    poll_lookahead_hours: float = Field(default=48.0, ge=0, description="window end after now (published forecasts)")
    poll_max_window_days: float = Field(default=31.0, gt=0, description="longest window one poll fetches (catch-up)")
    history_files: PathList = Field(
        default_factory=shipped_history_files,
        description="files the bootstrap loads: eco2mix, ODRÉ or RTE files of France's national load (others are "
        "refused before anything is written)",
    )
    history_until: str | None = Field(
        default=None, description="ISO timestamp: bootstrap loads history strictly before it"
    )

    # --- ingest (poll / upsert-version / bootstrap) -----------------------------------------
    source_backoff_s: float = Field(default=0.5, ge=0, description="first retry wait; doubles per retry")
    source_backoff_max_s: float = Field(default=30.0, ge=0, description="cap of one retry wait (and of Retry-After)")
    source_retry_budget_s: float = Field(
        default=45.0, gt=0, description="stop retrying a page after this many seconds (poll's exec_timeout is 60 s)"
    )
    poll_time_budget_s: float = Field(
        default=30.0, gt=0, description="poll starts no page after this many seconds of its run (the run ends "
        "truncated and the next tick continues); the page under way ends within source_timeout_s more. Their sum "
        "stays below poll's exec_timeout (60 s)")
    poll_bootstrap: bool = Field(
        default=True, description="upsert-version loads history_files first when the store holds no measurements "
        "(poll waits for it)"
    )
    upsert_max_batches: int = Field(default=200, ge=1, description="landed pages versioned per invocation")
    upsert_chunk_rows: int = Field(default=500_000, ge=1, description="measurement rows per insert")
    upsert_lease_ttl_s: float = Field(
        default=300.0, ge=10, le=3600,
        description="expiry of the ClickHouse leases of upsert-version, bootstrap and featurize (measurements-writer) "
        "and of detect (shared/lease.py): must exceed their exec_timeout; a crashed holder blocks them at most this "
        "long",
    )
    source_perimeter: str = Field(
        default="France", min_length=1,
        description="the only perimetre accepted from the source; records of any other go to rejected_records",
    )
    source_natures: TextList = Field(
        default_factory=lambda: ["Données temps réel", "Données consolidées", "Données définitives",
                                 "Données temps réel (API RTE short_term)"],
        min_length=1,
        description="accepted nature labels (ODRÉ's three and the shipped history's RTE-API label); "
        "any other nature goes to rejected_records",
    )
    poll_expected_lag_min: float = Field(
        default=120.0, ge=0,
        description="quarter-hours newer than now minus this are not yet required from the source (publication lag)",
    )
    poll_reread_attempts: int = Field(
        default=2, ge=0, le=10, description="re-reads of a short or shifted window within one poll"
    )
    poll_gap_max_attempts: int = Field(
        default=6, ge=1,
        description="observations of a gap (spaced poll_gap_retry_min apart) before it is marked source_incomplete",
    )
    poll_gap_retry_min: float = Field(
        default=30.0, ge=0, description="minimum simulated/real minutes between two counted attempts on a gap"
    )
    poll_gap_rereads_per_tick: int = Field(
        default=8, ge=0, description="recorded open gaps (local days) re-read per poll outside its window"
    )
    # --- end ingest --------------------------------------------------------------------------

    # --- series / forecasting ---------------------------------------------------------------
    series_source: str = Field(default="eco2mix_national", pattern=SERIES_NAME,
                               description="source of the forecast series (letters, digits, _ . : -)")
    series_metric: str = Field(default="consommation", pattern=SERIES_NAME,
                               description="metric of the forecast series (letters, digits, _ . : -)")
    forecast_resolution_min: GridStep = Field(default=30, description="forecast grid step")
    forecast_horizon_days: int = Field(default=7, ge=1, le=14, description="days ahead")

    # --- forecasting (featurize + forecast stages, backtest) -----------------------------------
    features_lookback_days: int = Field(default=1830, ge=14, description="oldest ts featurize (re)computes")
    max_interp_steps: int = Field(default=4, ge=0, description="gaps up to this many grid steps are interpolated")
    forecast_train_days: int = Field(default=1461, ge=28, description="training window length (4 years; the "
                                     "weather-free model)")
    forecast_weather_train_days: int = Field(default=1096, ge=28, description="the weather model's training window "
                                             "(3 years: its five profile fits scale with it)")
    forecast_holdout_days: int = Field(default=91, ge=7, description="recent days kept out of training to "
                                       "calibrate intervals and compare new vs current model")
    forecast_retrain_hours: float = Field(default=24.0, gt=0, description="retrain when the model is older")
    # a daily retrain stored a version (10 networks for the weather model) every day, never deleted, and /models
    # and the weather model's retrain plan read every version's metadata
    forecast_keep_versions: int = Field(default=30, ge=1, description="model versions kept per series in the "
                                        "artifact store (the newest; the current one always): older ones are "
                                        "deleted after each training")
    forecast_epochs: int = Field(default=10, ge=1, description="profile network epochs")
    forecast_learning_rate: float = Field(default=0.01, gt=0, description="always set: the LR finder crashes")
    forecast_batch_size: int = Field(default=1024, ge=16, description="profile network batch size")
    forecast_profile_min_steps: int = Field(default=400, ge=0, description="optimizer steps the profile network "
                                            "gets at least: its epochs are raised on a short series (0 = off)")
    forecast_level_min_history_days: int = Field(
        default=913, ge=0, description="days of valid history the level network needs: below, the model has none, "
        "the last day's level is carried forward (reverting toward the last 14 days' mean by weights learnt on the "
        "history, ModelConfig.persistence_shrink) and the model is trained again on its whole history after the "
        "holdout (bench.short_series: the network lost from D+2 on with two years of history and won at every D+k with "
        "three; 0 = always)")
    forecast_level_lags: int = Field(default=14, ge=2, description="daily blocks the level network reads")
    forecast_weather_level_lags: int = Field(default=7, ge=2, description="daily blocks the weather model's level "
                                             "network reads (its residual has the weather taken out)")
    forecast_level_epochs: int = Field(default=60, ge=1, description="level network epochs")
    forecast_profile_seeds: int = Field(default=1, ge=1, le=16, description="profile networks trained with "
                                        "successive seeds; the profile is their mean (each adds one profile fit)")
    forecast_weather_profile_seeds: int = Field(default=5, ge=1, le=16, description="the same for the weather "
                                                "model (its seed-dependent weather slopes move every forecast)")
    forecast_weather_linear_weight: float = Field(
        default=0.3, ge=0, le=1, description="weight of the weather model's linear companion (a ridge regression per "
        "time of day on the same temperature and calendar) against its networks; 0 = networks alone")
    forecast_weather_damping: bool = Field(
        default=True, description="shrink the temperature forecast's anomaly toward the normal by slopes learnt per "
        "lead day on the weather model's training holdout (shared/weather/damping.py); false = fed as it comes")
    forecast_interval_level: float = Field(default=0.8, gt=0, lt=1, description="prediction interval level")
    forecast_interval_centered: bool = Field(default=True, description="conformal bounds around the holdout's "
                                             "median error (a one-off level shift in the holdout is not spread)")
    forecast_seed: int = Field(default=42, description="random seed of training (reproducible models)")
    # one thread: the networks are small (NeuralProphet's batches stay under torch's parallel grain), so a second
    # intra-op thread only spins — one weather-model training, fresh process, back to back 2 → 1 → 2 → 1 threads:
    # 104.1 / 85.6 / 82.6 / 75.9 s wall, 136.4 / 86.7 / 112.3 / 76.9 CPU-s; forecasts bit-identical (checked)
    forecast_torch_threads: int = Field(default=1, ge=1, description="torch CPU threads while training/predicting "
                                        "(1: the networks are too small for a second thread to help)")
    # the seeds' networks train side by side in this many processes (the forecast function's CPUs): the weather
    # model's five profile and five level fits take ~60 % of the sequential time on this 2-core machine, with the
    # same networks (model._fit_seeds); each worker process adds ~0.4–1 GiB to the function's memory. The workers'
    # queues need POSIX semaphores in /dev/shm, which every OCI container has (opencontainers/runtime-spec
    # config-linux.md, "Default Filesystems": /dev/shm tmpfs) — faasd and Kubernetes run OCI containers; AWS Lambda
    # does not mount it (template.yaml sets 1 there)
    forecast_train_processes: int = Field(default=2, ge=1, le=16, description="processes that train the seeds' "
                                          "networks side by side, at most (capped by the CPUs available; 1 = all "
                                          "in the function's own process; the networks are the same whatever the "
                                          "count)")
    # the third level of "fresh data" (shared.series.freshness_status): past it the model is not used
    forecast_max_staleness_hours: float = Field(default=6.0, gt=0, description="newer data needed for the model; "
                                                "older = the simple-model fallback, PowerSenseDataStaleCritical "
                                                "(the query function exports it) and dbt's source freshness error "
                                                "(rendered from it): set it on the forecast and query functions and "
                                                "dbt alike")
    forecast_min_completeness: float = Field(default=0.8, ge=0, le=1, description="share of the last 14 days")
    forecast_accept_tolerance: float = Field(default=0.0, ge=0, description="new model's holdout MAPE may exceed "
                                             "the current one by this fraction and still replace it")
    forecast_flatline_steps: int = Field(default=4, ge=2, description="training-data gate: a run of this many "
                                         "identical consecutive grid values is a flatline and never used")
    forecast_ramp_points: int = Field(default=6, ge=4, description="training-data gate: this many consecutive, "
                                      "equally spaced values on one straight line are a gap the source filled by "
                                      "linear interpolation; the values between the two ends are never used")
    forecast_conformal_days: int = Field(default=91, ge=7, description="adaptive intervals: errors of the forecasts "
                                         "issued over this many recent days (per lead day) set the bounds")
    forecast_min_history_days: int = Field(default=14, ge=8, description="below this much valid history no "
                                           "forecast is evaluated (clear error)")
    forecast_model_min_history_days: int = Field(default=56, ge=28, description="below this much valid history "
                                                 "the model is not trained; the best simple model is used")
    # weather in production (shared/weather/featurize.py writes weather_features; the forecast stage reads them)
    forecast_weather: bool = Field(default=True, description="use the weather-aware model when the weather feed "
                                   "is fresh (else the weather-free model, flagged in forecasts.weather_status)")
    weather_max_age_h: float = Field(
        default=12.0, gt=0, le=72,
        description="newest temperature forecast older than this (hours since its issue time) = stale: the "
        "weather-free model is used (poll-weather hourly; Open-Meteo's ECMWF IFS updates every 6 h + ~2 h delay)")
    forecast_standby_retrain_hours: float = Field(
        default=168.0, gt=0, description="the model a run does not use (weather-free while weather is fresh, the "
        "weather model while it is not) is retrained when older, in a run that trains nothing else")
    # --- end forecasting -------------------------------------------------------------------------

    # --- query / security -------------------------------------------------------------------
    query_token: SecretStr | None = Field(default=None, description="secret file query_token: bearer token of query")
    admin_token: SecretStr | None = Field(
        default=None,
        description="secret file admin_token: bearer token a stage's request options need (backfills, force_train, "
                    "bootstrap); the scheduled run (empty body) needs none; unset = options refused")
    gateway_user: str = Field(default="admin", description="embedded gateway basic-auth user (/system/*)")
    gateway_password: SecretStr | None = Field(default=None, description="secret file gateway_password")
    gateway_max_body_bytes: int = Field(
        default=1024 * 1024, ge=0, description="embedded gateway: largest request body (413 beyond; read in chunks)"
    )
    gateway_async_queue_size: int = Field(
        default=16, ge=1, le=10_000, description="embedded gateway: async invocations waiting to run (429 beyond)"
    )
    gateway_async_workers: int = Field(
        default=1, ge=1, le=64, description="embedded gateway: async invocations run at once (queue-worker)"
    )
    gateway_callback_urls: TextList = Field(
        default_factory=list, description="embedded gateway: allowed X-Callback-Url prefixes (empty = callbacks "
        "refused with 400)"
    )
    query_root_path: str = Field(
        default="/function/query", pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description="path prefix the gateway serves query under (Swagger UI's API base; '' when served at /)",
    )

    # --- query (read API) -----------------------------------------------------------------------
    query_cache_ttl_s: float = Field(
        default=1.0, ge=0, le=60, description="re-read the data watermark at most this often (0 = every request)"
    )
    query_cache_entries: int = Field(default=512, ge=0, le=100_000, description="cached responses (0 = no cache)")
    # the second level of "fresh data" (shared.series.freshness_status): stale
    query_max_data_age_s: float = Field(default=3 * 3600.0, gt=0, description="data older = stale: /health "
                                        "degraded, detect's freshness check fails, PowerSenseDataStale (the query "
                                        "function exports it) and dbt's source freshness warning (rendered from "
                                        "it)")
    # --- end query ------------------------------------------------------------------------------

    # --- observability ----------------------------------------------------------------------
    pushgateway_url: str | None = Field(default=None, description="host:port of a Prometheus Pushgateway")

    # --- detection (detect stage: anomalies, data quality, drift) -----------------------------
    detect_schedule: str = Field(default="4-59/15 * * * *", description="cron of detect (replayed by evaluation)")
    detect_overlap_hours: float = Field(default=48.0, gt=0, description="re-examined span before the watermark")
    detect_max_window_days: float = Field(default=31.0, gt=0, description="longest span one run examines")
    detect_calibration_days: int = Field(default=28, ge=7, description="trailing days for residual scales")
    detect_onset_z: float = Field(default=8.0, gt=0, description="robust z of a 15-min residual jump to alarm")
    detect_flat_z: float = Field(default=1.0, gt=0, description="expected move (z) that an unchanged value misses")
    detect_flat_min_repeats: int = Field(default=2, ge=1, description="repeats that make a flatline regardless")
    detect_level_shift_min_minutes: float = Field(
        default=120.0, gt=0,
        description="an anomalous run lasting this long is a level shift (minutes, at least 2 steps of the series)",
    )
    detect_level_shift_z: float = Field(default=7.0, gt=0, description="z of a lasting (4 h) step = level shift")
    detect_max_run_hours: float = Field(default=48.0, gt=0, description="accept a new level after this long")
    detect_value_lag_min: float = Field(default=4.0, ge=0, description="a value for ts is due at ts + step + lag")
    detect_ignore_fallback_gap: bool = Field(
        default=True, description="RTE never publishes the first 02:00-02:45 local hour of the fall-back day"
    )
    detect_forecast_weight: float = Field(
        default=0.5, ge=0, le=1,
        description="residual detector: share of the issued forecast's expected change where a forecast covers the "
        "point (the rest: the seasonal profile's)",
    )
    detect_zscore_lookback_weeks: int = Field(
        default=8, ge=2, description="z-score detector (used without a forecast or profile): weeks of the same "
        "local weekday and time each value is compared with")
    detect_zscore_threshold: float = Field(default=3.0, gt=0, description="z-score detector: |z| that flags a value")
    # the first level of "fresh data" (shared.series.freshness_status): late
    dq_freshness_max_min: float = Field(default=90.0, gt=0, description="newest value older than this = late "
                                        "(detect's freshness check warns)")
    dq_completeness_min: float = Field(
        default=0.98, ge=0, le=1, description="share of a day's expected values below which completeness fails")
    dq_range_margin: float = Field(default=0.2, ge=0, description="learned bounds widened by this fraction")
    drift_every_min: float = Field(default=60.0, gt=0, description="drift metrics at most this often")
    drift_window_days: float = Field(default=7.0, gt=0, description="recent window the drift measures compare")
    drift_reference_days: float = Field(default=730.0, gt=0, description="training window for PSI")
    drift_mape_max: float = Field(default=0.05, gt=0, description="D+1 MAPE above this requests a retrain")
    drift_coverage_tolerance: float = Field(default=0.15, ge=0, description="allowed coverage shortfall")
    drift_psi_max: float = Field(default=0.5, gt=0, description="PSI above this requests a retrain")
    drift_request_cooldown_hours: float = Field(default=24.0, ge=0, description="hours between requests per measure")
    # --- end detection -------------------------------------------------------------------------
    # --- plausibility (shared/plausibility.py) ---------------------------------------------------
    # Physical bounds of French national load, learned from the shipped real history 2000–2023
    # (data/eco2mix, 682 742 consumption values): see shared/plausibility.py for the figures.
    plausibility_metrics: TextList = Field(
        default_factory=lambda: ["consommation", "prevision_j1", "prevision_j"],
        description="metrics (national load, MW) whose values are checked for plausibility",
    )
    plausibility_min_value_mw: float = Field(
        default=14_000.0, ge=0, description="a load at or below this is implausible (lowest real value 28 399 MW)"
    )
    plausibility_max_value_mw: float = Field(
        default=150_000.0, gt=0, description="a load above this is implausible (highest real value 102 098 MW)"
    )
    plausibility_max_step_mw: float = Field(
        default=12_000.0, gt=0, description="largest possible change per 15 min (largest real step 5 521 MW)"
    )
    plausibility_max_excursion_hours: float = Field(
        default=48.0, gt=0, description="a run after an impossible jump longer than this is accepted as real"
    )
    # --- end plausibility ----------------------------------------------------------------------
    # --- weather (shared/weather/, functions/poll-weather) -----------------------------------------
    weather_url: str = Field(
        default="https://api.open-meteo.com/v1", description="Open-Meteo forecast API base (GET <url>/forecast)"
    )
    weather_archive_url: str = Field(
        default="https://archive-api.open-meteo.com/v1",
        description="Open-Meteo historical (archive) API base (GET <url>/archive), for weather-backfill",
    )
    weather_models: TextList = Field(
        default_factory=lambda: ["meteofrance_seamless", "ecmwf_ifs025"],
        min_length=1,  # none polled every run "successfully" and wrote nothing (POWERSENSE_FORECAST_WEATHER=false turns
                       # the weather off)
        description="Open-Meteo forecast models, in priority order for the national forecast (see shared/weather)",
    )
    weather_archive_model: str = Field(
        default="best_match",
        description="Open-Meteo archive model of realised temperature (best_match = ERA5 + ERA5-Land)",
    )
    weather_archive_calls_per_minute: int = Field(
        default=500, ge=0,
        description="weather-backfill --archive paces its requests to this many Open-Meteo calls a minute (each "
                    "location of a request counts as at least one; the free API allows 600; 0 = no pacing)",
    )
    weather_archive_calls_per_hour: int = Field(
        default=4500, ge=0,
        description="and, for a backfill larger than this, to this many calls an hour (the free API allows "
                    "5,000 an hour and 10,000 a day; 0 = no hourly pacing)",
    )
    weather_stations_file: Path = Field(
        default=REPO_ROOT / "data" / "weather" / "stations_meteo_rte_poids.csv",
        description="weighted locations (ID;Nom;longitude;latitude;Poids) aggregated to one national temperature",
    )
    weather_forecast_days: int = Field(
        default=9, ge=1, le=16, description="forecast_days asked from Open-Meteo (9 covers local D+7 from any origin)"
    )
    weather_past_days_max: int = Field(
        default=3, ge=0, le=92, description="most past_days one poll-weather run asks for (catch-up after an outage)"
    )
    weather_min_weight_share: float = Field(
        default=0.8, gt=0, le=1,
        description="an hour is aggregated only when stations holding this share of the weight have a value",
    )
    # --- end weather ---------------------------------------------------------------------------

    # --- ops (deployment) --------------------------------------------------------------------
    # OpenFaaS names a secret's file after the secret, and one namespace cannot hold two secrets
    # called clickhouse_password: the read-only query function is given `clickhouse_reader_password`
    # (openfaas-stack.yml) and uses it when no clickhouse_password is set.
    clickhouse_reader_password: SecretStr | None = Field(
        default=None, description="secret file clickhouse_reader_password: powersense_reader's password (query), "
        "used when no clickhouse_password is set")

    @model_validator(mode="after")
    def _reader_password(self) -> Settings:
        if self.clickhouse_reader_password is not None and not self.clickhouse_password.get_secret_value():
            self.clickhouse_password = self.clickhouse_reader_password
        return self
    # --- end ops -------------------------------------------------------------------------------

    # --- logging ----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="log level")
    log_file: str | None = Field(default=None, description="write JSON log lines here instead of stderr")

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
            sources.append(_HyphenatedSecrets(settings_cls, Path(secrets_dir)))
        return tuple(sources)

    @field_validator("clickhouse_url", "source_url", "weather_url", "weather_archive_url")
    @classmethod
    def _http_url(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None or (v.strip() == "" and info.field_name == "clickhouse_url"):
            return None  # unset (an empty value, as compose's ${VAR:-} writes it, is unset too)
        return http_url(v)

    @field_validator("log_file")
    @classmethod
    def _log_file_writable_place(cls, v: str | None) -> str | None:
        # the JSON handler opens it at start-up: a missing directory was a FileNotFoundError traceback there
        if v in (None, ""):
            return None
        path = Path(v)
        if path.is_dir():
            raise ValueError(f"{v!r} is a directory, not a file")
        if not path.parent.is_dir():
            raise ValueError(f"directory {str(path.parent)!r} does not exist")
        return v

    @field_validator("detect_schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if not five_field_cron(v):
            raise ValueError(f"{v!r} is not a five-field cron expression (e.g. '4-59/15 * * * *')")
        return v

    @field_validator("history_until")
    @classmethod
    def _iso_instant(cls, v: str | None) -> str | None:
        # checked at start-up: a typo here used to surface only when bootstrap ran, as a pandas parse error
        if v in (None, ""):
            return None
        from shared.timeutil import iso_instant  # imported here: timeutil loads pandas, settings must stay light

        return iso_instant(v)

    def freshness_levels(self) -> dict[str, float]:
        """The ages (s) past which data is ``late``, ``stale`` and ``too_old``, in order (checked at start-up): the
        thresholds ``shared.series.freshness_status`` applies, the query function exports
        (``powersense_data_freshness_threshold_seconds``, which the data-stale alerts compare with), dbt's source
        freshness renders and the dashboards colour by."""
        return {"late": self.dq_freshness_max_min * 60.0, "stale": float(self.query_max_data_age_s),
                "too_old": self.forecast_max_staleness_hours * 3600.0}

    @model_validator(mode="after")
    def _freshness_levels_in_order(self) -> Settings:
        # late ≤ stale ≤ too old for the model: each level of shared.series.freshness_status includes the next
        late_s, stale_s, too_old_s = self.freshness_levels().values()
        if not late_s <= stale_s <= too_old_s:
            raise ValueError(
                "fresh-data levels out of order: need POWERSENSE_DQ_FRESHNESS_MAX_MIN (minutes, late) × 60 <= "
                "POWERSENSE_QUERY_MAX_DATA_AGE_S (seconds, stale) <= POWERSENSE_FORECAST_MAX_STALENESS_HOURS (hours) "
                f"× 3600; got {late_s:g} s, {stale_s:g} s, {too_old_s:g} s")
        return self

    @model_validator(mode="after")
    def _no_empty_secret(self) -> Settings:
        # an empty secret file (`echo -n "$UNSET" > file`) counted as set: an empty query token refused every request,
        # an empty S3 secret key passed the both-or-neither check, an empty password was sent as it was
        empty = sorted(f"POWERSENSE_{name.upper()}" for name in self.model_fields_set
                       if isinstance(value := getattr(self, name), SecretStr) and not value.get_secret_value().strip())
        if empty:
            raise ValueError(f"{', '.join(empty)}: empty (a secret file or a variable with nothing in it): fill it, "
                             "or remove it")
        return self

    @model_validator(mode="after")
    def _plausible_range(self) -> Settings:
        # bounds typed in GW (150) left every real load above the maximum: nothing would reach the series
        if self.plausibility_min_value_mw >= self.plausibility_max_value_mw:
            raise ValueError(
                f"POWERSENSE_PLAUSIBILITY_MIN_VALUE_MW ({self.plausibility_min_value_mw:g}) must be below "
                f"POWERSENSE_PLAUSIBILITY_MAX_VALUE_MW ({self.plausibility_max_value_mw:g}); both are in MW")
        return self

    @model_validator(mode="after")
    def _cluster_needs_server(self) -> Settings:
        if self.clickhouse_cluster and self.clickhouse_url is None:
            raise ValueError("POWERSENSE_CLICKHOUSE_CLUSTER needs POWERSENSE_CLICKHOUSE_URL (chDB is one node)")
        return self

    @model_validator(mode="after")
    def _features_cover_the_training_window(self) -> Settings:
        # the forecast reads its window from featurize's table, which reaches back features_lookback_days only
        longest = max(self.forecast_train_days, self.forecast_weather_train_days)
        if self.features_lookback_days < longest:
            raise ValueError(f"POWERSENSE_FEATURES_LOOKBACK_DAYS ({self.features_lookback_days}) must cover the "
                             f"forecast's training window ({longest} days: POWERSENSE_FORECAST_TRAIN_DAYS / "
                             "POWERSENSE_FORECAST_WEATHER_TRAIN_DAYS)")
        return self

    @model_validator(mode="after")
    def _weather_covers_the_horizon(self) -> Settings:
        # a horizon past the temperature forecast left every run's weather "incomplete": the weather-free model
        # for good, and PowerSenseForecastWithoutWeather firing, without a word at start-up. Open-Meteo's
        # forecast_days counts today; the horizon's last local day ends up to two calendar days later (9 for 7)
        needed = self.forecast_horizon_days + 2
        if self.forecast_weather and self.weather_forecast_days < needed:
            raise ValueError(f"POWERSENSE_WEATHER_FORECAST_DAYS ({self.weather_forecast_days}) does not cover the "
                             f"forecast horizon: POWERSENSE_FORECAST_HORIZON_DAYS ({self.forecast_horizon_days}) "
                             f"needs at least {needed} (Open-Meteo allows 16), or POWERSENSE_FORECAST_WEATHER=false")
        return self

    @property
    def embedded(self) -> bool:
        """True when the store is the in-process chDB engine."""
        return self.clickhouse_url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Build the settings once per process; raise ConfigurationError naming the bad variables."""
    try:
        return Settings()
    except SettingsError as exc:
        # pydantic-settings' own secret source could not read a file (a dangling link, bytes that are not UTF-8)
        raise ConfigurationError(f"invalid configuration: {exc}: {exc.__cause__ or ''}".rstrip(": ")) from exc
    except ValidationError as exc:
        # a field's error names its variable; a model-level one (no loc) names its variables in its message
        problems = "; ".join(
            f"POWERSENSE_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" if e["loc"]
            else str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from exc
