"""Request parameter models (unknown fields are rejected) and response models of the query API.

Every request model forbids extra fields, so a misspelt parameter (``metrc=``) is a 422 rather than a
silently ignored filter; a value a model refuses (not a date, not one of the choices, over a maximum)
is a 400 (``shared.app.validation_status``). Timestamps are ISO 8601; a timestamp without an offset is taken as UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from shared.settings import get_settings
from shared.timeutil import parse_iso, utc_datetime

# Documented maxima (README "Query API"): a request can never ask for an unbounded amount of work.
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 5_000
MAX_RANGE_DAYS = 366  # raw and sub-daily intervals
MAX_RANGE_DAYS_DAILY = 3660  # interval=1d: ten years per request
MAX_VS_ACTUAL_DAYS = 92
MAX_ROWS_LIMIT = 1_000  # runs, anomalies, data quality, forecast run lists
DEFAULT_WINDOW_DAYS = 7

# DateTime64(3) holds 1900…2299; keep user timestamps well inside so binding can never overflow.
_MIN_TS = datetime(1990, 1, 1, tzinfo=UTC)
_MAX_TS = datetime(2200, 1, 1, tzinfo=UTC)
_RANGE_ERROR = "timestamp must be between 1990-01-01 and 2200-01-01"

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
RUN_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"


def _utc_in_range(value: datetime) -> datetime:
    """Naive → UTC; reject timestamps outside 1990…2200 (clear 400 instead of a store error)."""
    try:
        value = utc_datetime(value)
    except OverflowError:  # e.g. 9999-12-31T23:00-05:00: its UTC instant lies outside datetime's range
        raise ValueError(_RANGE_ERROR) from None
    if not _MIN_TS <= value < _MAX_TS:
        raise ValueError(_RANGE_ERROR)
    return value


def _iso_text(value: object) -> object:
    """Only ISO 8601 text (or a datetime, from code): pydantic's lax mode read a number, or a string of digits, as
    Unix seconds or milliseconds, so ``start=1700000000`` answered 2023-11-14 and ``start=20231101`` became 1970.
    Digits alone are refused (Unix time, or ISO's basic date: which one is not said), as ingestion refuses them."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and not value.strip().isdigit():  # digits alone: Unix time or a basic date, unsaid
        try:
            return parse_iso(value)
        except ValueError:
            if _UNENCODED_PLUS.search(value.strip()):
                raise ValueError("not an ISO 8601 instant: the offset's '+' reached the server as a space (a '+' in "
                                 "a URL query means a space); send it as %2B, e.g. 2023-05-04T14:00%2B02:00") from None
    raise ValueError("not an ISO 8601 instant (e.g. 2023-05-04, 2023-05-04T12:00:00Z or 2023-05-04T14:00+02:00)")


# a time followed by a space and an offset: "2023-05-04T14:00 02:00", what an unencoded "+02:00" becomes
_UNENCODED_PLUS = re.compile(r"[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)? \d{2}(?::?\d{2})?$")


Timestamp = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_utc_in_range)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Format = Literal["json", "csv"]
Interval = Literal["raw", "15min", "30min", "1h", "1d"]
INTERVAL_MINUTES: dict[str, int] = {"15min": 15, "30min": 30, "1h": 60, "1d": 1440}

_FORBID = ConfigDict(extra="forbid")


def _configured_source() -> str:
    """The deployment's forecast series source (POWERSENSE_SERIES_SOURCE), read per request: the class default
    would ignore a configured series, so /forecasts and /anomalies answered another series than /health's."""
    return get_settings().series_source


def _configured_metric() -> str:
    """The deployment's forecast series metric (POWERSENSE_SERIES_METRIC), as :func:`_configured_source`."""
    return get_settings().series_metric


# --- request parameters ---------------------------------------------------------------------------
class SeriesParams(BaseModel):
    """The series a query is about (defaults: those of the forecast series in Settings, written once there)."""

    model_config = _FORBID

    source: Name = Field(default_factory=_configured_source,
                         description="measurement source (default: the configured series, POWERSENSE_SERIES_SOURCE)")
    metric: Name = Field(default_factory=_configured_metric,
                         description="ODRÉ field name, e.g. consommation (default: POWERSENSE_SERIES_METRIC)")


class MeasurementsParams(BaseModel):
    """Query parameters of ``GET /measurements``."""

    model_config = _FORBID

    metric: Name = Field(description="ODRÉ field name, e.g. consommation, prevision_j1, prevision_j")
    source: Name = Field(default_factory=_configured_source,
                         description="measurement source (default: the configured series, POWERSENSE_SERIES_SOURCE)")
    start: Timestamp | None = Field(default=None, description="inclusive; default: 7 days before end")
    end: Timestamp | None = Field(default=None, description="exclusive; default: just after the latest stored value")
    interval: Interval = Field(
        default="raw",
        description="resampling interval; raw = stored rows; 1d = Europe/Paris days (23, 24 or 25 h), shorter "
                    "ones UTC buckets",
    )
    agg: Literal["mean", "min", "max"] = Field(default="mean", description="aggregate per resampling bucket")
    version: Literal["latest", "all"] = Field(
        default="latest",
        description="latest: one value per timestamp (best nature, latest version); all: every stored revision",
    )
    nature: str | None = Field(default=None, max_length=80, description="only this nature (default: best available)")
    as_of: Timestamp | None = Field(default=None, description="values as known at this insertion time")
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description=f"page size (max {MAX_LIMIT})")
    cursor: str | None = Field(default=None, max_length=200, description="next_cursor of the previous page")
    format: Format | None = Field(default=None, description="json (default) or csv; Accept: text/csv works too")


class ForecastParams(SeriesParams):
    """Query parameters of ``GET /forecasts``."""

    run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN, description="default: the latest run")
    horizon_day: int | None = Field(default=None, ge=0, le=31, description="only D+k steps (Europe/Paris days)")
    max_horizon_steps: int | None = Field(default=None, ge=1, le=10_000, description="only the first N steps")
    format: Format | None = None


class ForecastRunsParams(SeriesParams):
    """Query parameters of ``GET /forecasts/runs``."""

    limit: int = Field(default=50, ge=1, le=MAX_ROWS_LIMIT)


class VsActualParams(SeriesParams):
    """Query parameters of ``GET /forecasts/vs-actual``."""

    start: Timestamp | None = Field(default=None, description="inclusive; default: 7 days before end")
    end: Timestamp | None = Field(default=None, description="exclusive; default: just after the latest actual")
    run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN, description="compare one run only")
    horizon_day: int | None = Field(default=None, ge=0, le=31, description="only forecasts made for D+k")
    format: Format | None = None


class AnomaliesParams(SeriesParams):
    """Query parameters of ``GET /anomalies``."""

    start: Timestamp | None = Field(default=None, description="inclusive (on ts); default: 30 days before end")
    end: Timestamp | None = Field(default=None, description="exclusive; default: now")
    kind: Literal["spike", "dip", "level_shift", "flatline", "missing", "implausible", "interpolated"] | None = None
    severity: Literal["low", "medium", "high"] | None = None
    detector: Literal["residual", "zscore", "plausibility", "gate"] | None = None
    status: Literal["open", "resolved"] | None = None
    limit: int = Field(default=500, ge=1, le=MAX_ROWS_LIMIT, description="page size")
    cursor: str | None = Field(default=None, max_length=200, description="next_cursor of the previous page")
    format: Format | None = Field(default=None, description="json (default) or csv; Accept: text/csv works too")


class DataQualityParams(SeriesParams):
    """Query parameters of ``GET /data-quality``."""

    run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN, description="default: the latest detect run")
    check: Name | None = Field(default=None, description="completeness, freshness, duplicates, out_of_range, …")
    status: Literal["ok", "warn", "fail"] | None = None
    limit: int = Field(default=500, ge=1, le=MAX_ROWS_LIMIT)


class ModelMetricsParams(SeriesParams):
    """Query parameters of ``GET /models/metrics``."""

    kind: Literal["accuracy", "coverage", "psi", "retrain_request"] | None = None
    limit: int = Field(default=500, ge=1, le=MAX_ROWS_LIMIT)


class RunsParams(BaseModel):
    """Query parameters of ``GET /runs``."""

    model_config = _FORBID

    function: str | None = Field(default=None, pattern=r"^[a-z][a-z\-]{0,31}$")
    status: Literal["running", "success", "partial", "skipped", "failed"] | None = None
    # a run id as the product makes them (uuid4 hex, or the gateway's X-Call-Id: shared/app.py call_id)
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,64}$",
                               description="one run, by the run_id of its log lines, alerts and tables")
    start: Timestamp | None = Field(default=None, description="runs started at or after")
    end: Timestamp | None = Field(default=None, description="runs started before")
    limit: int = Field(default=100, ge=1, le=MAX_ROWS_LIMIT)


class ModelsParams(BaseModel):
    """Query parameters of ``GET /models``."""

    model_config = _FORBID

    series: Name | None = Field(
        default=None,
        description="artifact series, e.g. eco2mix_national.consommation.30min (default: the configured one)",
    )


class EmptyParams(BaseModel):
    """Endpoints without parameters still reject unknown ones."""

    model_config = _FORBID


# --- responses ------------------------------------------------------------------------------------
class ErrorResponse(BaseModel):
    """Every 4xx/5xx body."""

    error: str
    detail: Any = None


class MeasurementPoint(BaseModel):
    """One stored value (raw) or one resampling bucket (``n`` values aggregated)."""

    ts: datetime = Field(description="UTC instant (raw) or the bucket's start (resampled; 1d: a Paris midnight)")
    value: float | None = Field(description=(
        "in the metric's unit: MW for eco2mix's load fields (consommation, prevision_j1, prevision_j), °C for "
        "temperatures; null when the source withdrew the value or it failed the plausibility checks"))
    nature: str | None = None
    version: int | None = None
    inserted_at: datetime | None = None
    n: int | None = Field(default=None, description="values in the bucket (resampled only)")
    raw_value: float | None = Field(default=None, description=(
        "the value as the source sent it (raw points only): equals value unless flag says why value is null; null "
        "when the source withdrew the value"))
    flag: str | None = Field(default=None, description=(
        "the plausibility verdict known at as_of (raw points only): '' plausible, else why value is null "
        "(non_positive, below_min, above_max, impossible_jump). value null with flag '' = withdrawn by the source"))


class MeasurementsResponse(BaseModel):
    """A page of measurements."""

    source: str
    metric: str
    interval: str
    agg: str | None
    version: str
    nature: str | None
    as_of: datetime | None
    start: datetime
    end: datetime
    count: int
    next_cursor: str | None = Field(description="pass as cursor= to get the next page; null on the last page")
    points: list[MeasurementPoint]


class ForecastPoint(BaseModel):
    """One forecast step with its prediction interval."""

    ts: datetime
    horizon_steps: int = Field(description="steps after the run's origin, of POWERSENSE_FORECAST_RESOLUTION_MIN "
                                           "minutes (30 by default)")
    horizon_day: int = Field(description="lead day: Paris calendar days from the issue's day (0 = that day, "
                                         "1 = D+1 … 7)")
    yhat: float = Field(description="forecast, in the series' unit (MW for eco2mix's load)")
    lower: float | None = Field(description="lower bound of the prediction interval (interval_level), MW")
    upper: float | None = Field(description="upper bound of the prediction interval (interval_level), MW")
    yhat_source: str = Field(description="model | blend | seasonal_naive | daily_naive: what the lead day's value came "
                             "from (a fallback run's simple model per lead day)")
    model_weight: float = Field(description="weight of the model against seasonal naive for this lead day (0–1)")


class ForecastRunSummary(BaseModel):
    """Header of one forecast run."""

    run_id: str
    model_version: str
    issued_at: datetime
    origin: datetime
    quality: str
    fallback_reason: str
    interval_level: float
    steps: int
    first_ts: datetime
    last_ts: datetime
    weather_status: str = Field(description="used = the weather model with the temperature forecast known at the run; "
                                "else why not (off, missing, stale, incomplete, no_model, failed, unused) and the "
                                "values are the weather-free model's (or seasonal naive's)")


class ForecastRunResponse(ForecastRunSummary):
    """One forecast run with its (filtered) steps."""

    source: str
    metric: str
    count: int
    points: list[ForecastPoint]


class ForecastRunsResponse(BaseModel):
    """Most recent forecast runs first."""

    source: str
    metric: str
    count: int
    runs: list[ForecastRunSummary]


class VsActualPoint(BaseModel):
    """A forecast step next to the value that was then measured."""

    ts: datetime
    actual: float | None
    yhat: float
    lower: float | None
    upper: float | None
    error: float | None = Field(description="yhat - actual")
    run_id: str
    issued_at: datetime
    horizon_steps: int
    horizon_day: int


class AccuracySummary(BaseModel):
    """Accuracy over the compared steps (steps with a measured value only)."""

    n: int
    mae: float | None
    rmse: float | None
    mape_pct: float | None
    bias: float | None = Field(description="mean of yhat - actual")
    interval_coverage: float | None = Field(description="share of actuals inside [lower, upper]")


class VsActualResponse(BaseModel):
    """Forecast against actuals over a period; per step the latest forecast issued before it."""

    source: str
    metric: str
    start: datetime
    end: datetime
    run_id: str | None
    horizon_day: int | None
    summary: AccuracySummary
    points: list[VsActualPoint]


class Anomaly(BaseModel):
    """One anomalous point (latest state) as flagged by detect."""

    ts: datetime
    source: str
    metric: str
    kind: str
    detector: str
    severity: str
    value: float | None
    value_version: int
    expected: float | None
    lower: float | None
    upper: float | None
    score: float | None
    threshold: float | None
    model_version: str = Field(description="model version of the forecast behind `expected` ('profile': none "
                               "covered the point, the seasonal profile alone; '': a simple-model fallback "
                               "forecast, or a detector without an expectation)")
    forecast_run_id: str = Field(description="run of that forecast ('' = none): GET /forecasts?run_id= shows its "
                                 "quality and fallback_reason")
    detected_at: datetime
    run_id: str
    status: str
    resolved_at: datetime | None
    resolution: str


class AnomaliesResponse(BaseModel):
    """Anomalies of a window, newest first (empty until detect has run)."""

    start: datetime
    end: datetime
    count: int
    next_cursor: str | None = Field(default=None, description="pass as cursor= to get the next (older) page; null on "
                                    "the last page")
    items: list[Anomaly]


class QualityCheck(BaseModel):
    """One data-quality check result."""

    checked_at: datetime
    run_id: str
    source: str
    metric: str
    check: str
    scope: str
    value: float
    expected: float | None
    status: str
    details: dict[str, Any]


class DataQualityResponse(BaseModel):
    """The checks of one detect run (the latest by default; none until detect has run)."""

    run_id: str | None
    checked_at: datetime | None
    status_counts: dict[str, int]
    count: int
    items: list[QualityCheck]


class ModelMetric(BaseModel):
    """The latest value of one model measure (accuracy, coverage, PSI, or a retrain request)."""

    computed_at: datetime
    run_id: str
    kind: str
    name: str
    horizon_day: int
    scope: str
    model_version: str
    window_start: datetime
    window_end: datetime
    value: float
    threshold: float | None
    n: int
    breached: bool
    details: dict[str, Any]


class ModelMetricsResponse(BaseModel):
    """Latest value per (kind, name, horizon day, scope), from detect's model_metrics (empty until detect has run)."""

    source: str
    metric: str
    count: int
    items: list[ModelMetric]


class RunRow(BaseModel):
    """One pipeline_runs row (its final state)."""

    function: str
    run_id: str
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    rows_in: int
    rows_out: int
    error: str
    details: dict[str, Any]


class RunsResponse(BaseModel):
    """pipeline_runs history, most recent first."""

    count: int
    runs: list[RunRow]


class ModelsResponse(BaseModel):
    """The model registry of one series, read from the artifact store."""

    series: str
    available: bool = Field(description="false while the series has no model")
    current: dict[str, Any] | None
    models: list[dict[str, Any]]


class HealthResponse(BaseModel):
    """Store reachability and data freshness."""

    status: Literal["ok", "degraded", "unavailable"]
    store: bool
    data_fresh: bool
    latest_ts: datetime | None
    data_age_s: float | None
    max_data_age_s: float
    detail: str | None = Field(default=None, description="why the store is unavailable (e.g. database not initialised)")
