"""poll-weather and the realised-temperature backfill: load → compute → write, thin I/O.

**poll-weather** (one invocation; cron hourly, its own schedule):

* **plan** — :func:`plan_past_days` (pure) from the watermark in ClickHouse (:func:`read_watermark`: the
  newest ``inserted_at`` of a stored forecast = the fetch time of the last run that changed anything):
  ``past_days`` covers the days since then (capped at ``POWERSENSE_WEATHER_PAST_DAYS_MAX``), so a feed
  that was down is caught up on the hours it missed; ``forecast_days`` = ``POWERSENSE_WEATHER_FORECAST_DAYS``.
* **fetch** — one Open-Meteo forecast call for every weighted location and every model
  (:class:`~shared.weather.client.OpenMeteoClient`, retried with tenacity).
* **land** — each location's answer goes to ``raw_records`` (batch ``open_meteo-<fetch time>-<run>``;
  no ``raw_batches`` header: upsert-version versions only ODRÉ pages), values that cannot be used to
  ``rejected_records`` (stage ``poll-weather``, with the reason; each distinct payload once).
* **compute** — :func:`~shared.weather.parse.aggregate` (weighted national mean per model and hour) and
  :func:`~shared.weather.parse.blend` (per hour the first model of ``POWERSENSE_WEATHER_MODELS``).
* **write** — versioned with ``shared/ingest/versioning.py`` (``make_ukeys`` → ``compute_versions`` →
  ``write_versions``) under ``inserted_at`` = the fetch time (``shared.clock``): an unchanged value
  creates nothing (a re-run is idempotent), a changed value for the same target hour is a new version,
  so ``load_series(store, "open_meteo", "temperature_2m", as_of=T)`` is the forecast as known at T.

Writers of these measurements hold the ``weather-writer`` lease (versions are read-latest-then-insert);
they touch other ukeys than upsert-version, so they do not take its lease.  While the eco2mix history
bootstrap is pending the stage skips: a weather row written first would make the bootstrap believe the
store already holds polled measurements (``shared.ingest.versioning.has_polled_measurements``).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from prometheus_client import Counter, Gauge

from shared import clock
from shared.errors import BadRequestError, ConflictError, SourceError
from shared.ingest.poll import dead_letter, land_raw, new_batch_id
from shared.ingest.versioning import (
    bootstrap_pending,
    compute_versions,
    load_latest,
    make_ukeys,
    write_versions,
)
from shared.lease import Lease
from shared.logs import log_event
from shared.metrics import REGISTRY
from shared.runs import Run
from shared.settings import REPO_ROOT, Settings
from shared.store import Store
from shared.timeutil import to_utc
from shared.weather import (
    ENEDIS_NORMAL_METRIC,
    ENEDIS_REALISED_METRIC,
    ENEDIS_SOURCE,
    FORECAST_METRIC,
    FORECAST_NATURE,
    PERIMETER,
    REALISED_METRIC,
    REALISED_NATURE,
    SOURCE,
    model_metric,
)
from shared.weather.enedis import read_enedis_dir
from shared.weather.parse import (
    Parsed,
    Rejection,
    ResponseShapeError,
    aggregate,
    blend,
    load_stations,
    parse_response,
)

if TYPE_CHECKING:
    import httpx

    from shared.weather.client import OpenMeteoClient

log = logging.getLogger(__name__)

# Pushed with the stage metrics (Pushgateway job "poll-weather"): how far ahead the stored national forecast
# reaches after this run (a feed that stops updating shows it shrinking hour by hour), and dead letters.
WEATHER_HORIZON = Gauge(
    "powersense_weather_forecast_horizon_hours",
    "Hours between the issue time of the latest poll-weather run and the last hour of its national forecast",
    registry=REGISTRY,
)
# The newest realised-temperature hour stored (Open-Meteo's archive, 2-5 days behind): an archive outage leaves the
# run partial, which no stage alert counts as a failure, so its age is what PowerSenseWeatherRealisedStale reads.
WEATHER_REALISED_NEWEST = Gauge(
    "powersense_weather_realised_newest_timestamp_seconds",
    "Unix time of the newest realised 2 m temperature hour stored (the weather model's training data)",
    registry=REGISTRY,
)
WEATHER_REJECTED = Counter(
    "powersense_weather_values_rejected_total", "Open-Meteo values dead-lettered by poll-weather", registry=REGISTRY,
)

WEATHER_WRITER = "weather-writer"
STAGE = "poll-weather"
BACKFILL_STAGE = "weather-backfill"
ARCHIVE_BATCH_PREFIX = f"{SOURCE}-archive-"
# poll-weather's daily realised catch-up reads at most this many days back (longer gaps: weather-backfill)
CATCH_UP_DAYS = 31
WEATHER_DIR = REPO_ROOT / "data" / "weather"


# --- plan ------------------------------------------------------------------------------------------


def read_watermark(store: Store, settings: Settings) -> datetime | None:
    """Fetch time of the newest stored forecast version (None before the first run)."""
    value = store.scalar(
        """select max(inserted_at) from {db:Identifier}.measurements
           where source = {source:String} and metric in {metrics:Array(String)} having count() > 0""",
        {"source": SOURCE, "metrics": [FORECAST_METRIC, *map(model_metric, settings.weather_models)]},
    )
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def plan_past_days(watermark: datetime | None, now: datetime, max_past_days: int) -> int:
    """``past_days`` for this run: the UTC days since the last stored run (all of ``max_past_days`` on a
    fresh store), so the hours a failed feed missed are asked again; 0 when the last run was today."""
    if watermark is None:
        return max_past_days
    days = (now.astimezone(UTC).date() - watermark.astimezone(UTC).date()).days
    return max(0, min(days, max_past_days))


# --- compute (pure) --------------------------------------------------------------------------------


def forecast_rows(national: pd.DataFrame, blended: pd.DataFrame, priority: list[str]) -> pd.DataFrame:
    """The measurement rows of one run: the ``blended`` national forecast (:func:`~shared.weather.parse.blend`)
    + each model's ``national`` one (``ts, metric, nature, value, perimetre``)."""
    parts = [blended.assign(metric=FORECAST_METRIC)[["ts", "metric", "value"]]]
    for model in priority:
        one = national[national["model"] == model]
        parts.append(one.assign(metric=model_metric(model))[["ts", "metric", "value"]])
    rows = pd.concat(parts, ignore_index=True)
    rows["ts"] = pd.to_datetime(rows["ts"], utc=True)
    return rows.assign(nature=FORECAST_NATURE, perimetre=PERIMETER)


def with_ukeys(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (``ts, metric, nature, value, perimetre``) with the canonical ukey of each value."""
    return rows.assign(ukey=make_ukeys(rows["ts"], rows["metric"], rows["nature"], rows["perimetre"]))


# --- write -----------------------------------------------------------------------------------------


def upsert(store: Store, settings: Settings, rows: pd.DataFrame, *, source: str, batch_id: str,
           inserted_at: datetime | None = None) -> dict[str, int]:
    """Version ``rows`` against the latest stored versions; returns counts (new, revised, written)."""
    if rows.empty:
        return {"new": 0, "revised": 0, "written": 0}
    observed = with_ukeys(rows)
    latest = load_latest(store, source, observed["metric"].unique(), observed["ts"].min(), observed["ts"].max())
    new_rows = compute_versions(observed, latest)
    written = write_versions(store, new_rows, source, batch_id, settings.upsert_chunk_rows, inserted_at=inserted_at)
    n_new = int((new_rows["version"] == 1).sum()) if not new_rows.empty else 0
    return {"new": n_new, "revised": len(new_rows) - n_new, "written": written}


def _land(store: Store, body: Any, url: str, stations: pd.DataFrame, models: list[str], *, stage: str,
          batch_id: str, fetched_at: datetime, what: str, min_weight_share: float) -> tuple[Parsed, int]:
    """Land one Open-Meteo answer, then parse it: each location's answer in ``raw_records`` first (an answer that
    crashed the parse used to be lost with it), unusable values in ``rejected_records``; returns the parse and how
    many rejections were new. An answer that is not the shape asked for (or whose locations are not the stations
    asked) is dead-lettered whole, then raises SourceError."""
    land_raw(store, body if isinstance(body, list) else [body], batch_id=batch_id, fetched_at=fetched_at, url=url)
    coords = list(zip(stations["latitude"].astype(float), stations["longitude"].astype(float), strict=True))
    try:
        parsed = parse_response(body, stations["id"].tolist(), models, coords)
        # an answer short of some stations keeps the others (the weight-share rule decides each hour), unless
        # those it holds cannot reach the share: then it is not the answer asked for, and the run fails
        share = 1.0 - float(stations.loc[stations["id"].isin(parsed.missing), "weight"].sum())
        if share < min_weight_share:
            raise ResponseShapeError(f"location objects for stations holding {share:.0%} of the weight, under "
                                     f"POWERSENSE_WEATHER_MIN_WEIGHT_SHARE ({min_weight_share:.0%})")
    except ResponseShapeError as exc:
        dead_letter(store, [Rejection(0, f"response: {exc}", json.dumps(body, default=str)[:100_000])],
                    stage=stage, batch_id=batch_id, at=fetched_at)
        raise SourceError(f"Open-Meteo {what} unusable: {exc}") from exc
    return parsed, len(dead_letter(store, parsed.rejections, stage=stage, batch_id=batch_id, at=fetched_at))


def _lease(store: Store, settings: Settings) -> Lease:
    return Lease(store, WEATHER_WRITER, ttl_s=settings.upsert_lease_ttl_s)


# --- the stage -------------------------------------------------------------------------------------


def check_stations_setting(settings: Settings) -> None:
    """poll-weather's start-up check: the weighted locations file is readable and usable
    (:func:`~shared.weather.parse.load_stations`), so a wrong ``POWERSENSE_WEATHER_STATIONS_FILE`` stops the
    function when it is deployed instead of failing every hourly run."""
    load_stations(settings.weather_stations_file)


def run_poll_weather(
    store: Store,
    settings: Settings,
    run: Run,
    *,
    past_days: int | None = None,
    forecast_days: int | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Run:
    """One poll-weather invocation (cron: no options).  Fills and returns ``run`` (shared/runs.py contract):
    rows_in (values received), rows_out (measurement rows written), details; SourceError (HTTP 502) when
    Open-Meteo fails after retries or answers something that is not a forecast for the locations asked."""
    t0 = time.perf_counter()
    if past_days is not None and not 0 <= past_days <= 92:
        raise BadRequestError("past_days must be within 0…92 (Open-Meteo's limit)")
    if forecast_days is not None and not 1 <= forecast_days <= 16:
        raise BadRequestError("forecast_days must be within 1…16 (Open-Meteo's limit)")
    if bootstrap_pending(store, settings):
        run.skip("history bootstrap has not completed yet")
        return run
    stations = load_stations(settings.weather_stations_file)
    models = list(settings.weather_models)
    lease = _lease(store, settings)
    if not lease.acquire():
        run.skip(f"another weather writer is running ({lease.describe_other()})")
        return run
    with lease:
        now = clock.now()
        watermark = read_watermark(store, settings)
        past = past_days if past_days is not None else plan_past_days(watermark, now, settings.weather_past_days_max)
        days = forecast_days or settings.weather_forecast_days
        run.details.update(watermark=watermark.isoformat() if watermark else None, now=now.isoformat(),
                           past_days=past, forecast_days=days, models=models, locations=len(stations))
        from shared.weather.client import OpenMeteoClient as Client

        client = Client(settings, transport=transport)
        try:
            _poll_forecast(store, settings, run, client, stations, models, past, days)
            try:
                realised = realised_catch_up(store, settings, client, now, run_id=run.run_id, lease=lease)
            except SourceError as exc:
                # the forecast landed: the run did its main work. The archive's realised temperature (training
                # data, read once a day) is retried at the next run; before, its outage failed every hourly run and
                # paged PowerSenseStageFailing while the forecast feed was healthy
                realised = {"error": str(exc)}
                run.status = "partial"
                log_event(log, "weather_realised_failed", logging.WARNING, error=str(exc))
            run.details["realised"] = realised
            run.rows_out += int(realised.get("written", 0))
            newest = _newest_realised(store)
            if newest is not None:  # none before a first `weather-backfill --archive`: nothing to age
                WEATHER_REALISED_NEWEST.set(to_utc(newest).timestamp())
        finally:
            client.close()
    run.details["elapsed_s"] = round(time.perf_counter() - t0, 4)
    return run


def _poll_forecast(store: Store, settings: Settings, run: Run, client: OpenMeteoClient, stations: pd.DataFrame,
                   models: list[str], past: int, days: int) -> None:
    """Fetch, land, aggregate and version one forecast run (the body of poll-weather)."""
    body, url = client.forecast(stations["latitude"].tolist(), stations["longitude"].tolist(), models,
                                forecast_days=days, past_days=past)
    # The issue time of this run, on the product clock: every version it writes carries it.  (Not poll's
    # landing_time(), which never goes back within a process: the issue time must be the clock's.)
    fetched_at = clock.now()
    batch_id = f"{SOURCE}-{new_batch_id(fetched_at, run.run_id, 0)}"
    parsed, rejected = _land(store, body, url, stations, models, stage=STAGE, batch_id=batch_id,
                             fetched_at=fetched_at, what="answer",
                             min_weight_share=settings.weather_min_weight_share)
    national = aggregate(parsed.rows, stations, settings.weather_min_weight_share)
    rows = forecast_rows(national, blend(parsed.rows, stations, models, settings.weather_min_weight_share), models)
    counts = upsert(store, settings, rows, source=SOURCE, batch_id=batch_id, inserted_at=fetched_at)
    hours = parsed.rows.groupby("model")["ts"].nunique().to_dict() if not parsed.rows.empty else {}
    kept = national.groupby("model")["ts"].nunique().to_dict() if not national.empty else {}
    blended = rows[rows["metric"] == FORECAST_METRIC]
    WEATHER_REJECTED.inc(len(parsed.rejections))
    if not blended.empty:
        WEATHER_HORIZON.set((blended["ts"].max() - pd.Timestamp(fetched_at)).total_seconds() / 3600.0)
    run.rows_in = len(parsed.rows) + len(parsed.rejections)
    run.rows_out = counts["written"]
    run.details.update(
        batch_id=batch_id, issued_at=fetched_at.isoformat(), values=len(parsed.rows),
        rejected=len(parsed.rejections), dead_lettered=rejected,
        hours_per_model={m: int(hours.get(m, 0)) for m in models},
        hours_below_coverage={m: int(hours.get(m, 0)) - int(kept.get(m, 0)) for m in models},
        forecast_start=blended["ts"].min().isoformat() if not blended.empty else None,
        forecast_end=blended["ts"].max().isoformat() if not blended.empty else None,
        new=counts["new"], revised=counts["revised"],
    )
    log_event(log, "poll_weather_done", values=len(parsed.rows), rejected=len(parsed.rejections),
              rows_out=counts["written"], new=counts["new"], revised=counts["revised"], past_days=past,
              issued_at=fetched_at)


def _newest_realised(store: Store) -> datetime | None:
    """The newest stored hour of the archive's realised temperature (None before any backfill)."""
    return store.scalar(  # type: ignore[no-any-return]
        """select max(ts) from {db:Identifier}.measurements
           where source = {s:String} and metric = {m:String} having count() > 0""",
        {"s": SOURCE, "m": REALISED_METRIC})


def realised_catch_up(store: Store, settings: Settings, client: OpenMeteoClient, now: datetime, *, run_id: str,
                      lease: Lease) -> dict[str, Any]:
    """Once per UTC day, read Open-Meteo's archive from the day before the newest stored realised hour up to
    yesterday (at most ``CATCH_UP_DAYS``), so realised temperature keeps flowing after the backfill.

    Watermarks in ClickHouse: the newest ``temperature_2m_realised`` hour, and the newest archive answer
    landed in ``raw_records`` (one read per day: the archive updates daily, 2–5 days behind).  The day of
    overlap re-reads the newest values, so a preliminary reanalysis value that changes becomes a version.
    Nothing happens before a first ``weather-backfill --archive`` (the bulk path).
    """
    newest = _newest_realised(store)
    if newest is None:
        return {"skipped": "no realised history yet: run python -m shared weather-backfill --archive"}
    today = pd.Timestamp(now).tz_convert("UTC").floor("D")
    last_read = store.scalar(
        """select max(fetched_at) from {db:Identifier}.raw_records
           where startsWith(batch_id, {p:String}) having count() > 0""", {"p": ARCHIVE_BATCH_PREFIX})
    if last_read is not None and to_utc(last_read) >= today:
        return {"skipped": "archive already read today"}
    lo = max(to_utc(newest).floor("D") - pd.Timedelta(days=1), today - pd.Timedelta(days=CATCH_UP_DAYS))
    if lo >= today:
        return {"skipped": "realised temperature is up to date"}
    return _backfill_archive(store, settings, lo, today, lease, chunk_days=CATCH_UP_DAYS + 1, progress=False,
                             transport=None, run_id=run_id, client=client, stage=STAGE)


# --- realised temperature: the shipped Enedis series and the Open-Meteo archive -----------------------


def enedis_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Measurement rows of the Enedis series (two metrics, one nature each)."""
    parts = [frame.rename(columns={"realised": "value"})[["ts", "value"]].assign(
                 metric=ENEDIS_REALISED_METRIC, nature=REALISED_NATURE),
             frame.rename(columns={"normal": "value"})[["ts", "value"]].assign(
                 metric=ENEDIS_NORMAL_METRIC, nature="normale")]
    rows = pd.concat(parts, ignore_index=True)
    return rows[rows["value"].notna()].assign(perimetre=PERIMETER).reset_index(drop=True)


def backfill(
    store: Store,
    settings: Settings,
    start: date | datetime,
    end: date | datetime,
    *,
    shipped: bool = True,
    archive: bool = False,
    weather_dir: Path = WEATHER_DIR,
    chunk_days: int = 31,
    progress: bool = False,
    transport: httpx.BaseTransport | None = None,
    run_id: str = "backfill",
) -> dict[str, Any]:
    """Load realised temperature for ``[start, end)``: the shipped Enedis series (``shipped``) and/or
    Open-Meteo's archive at the weighted locations, aggregated like the forecasts (``archive``).

    Versioned like every measurement (a re-run writes nothing new).  Raises ConflictError while the
    eco2mix history bootstrap is pending or another weather writer runs.
    """
    from tqdm import tqdm

    lo, hi = to_utc(start), to_utc(end)
    if hi <= lo:
        raise BadRequestError("end must be after start")
    if bootstrap_pending(store, settings):
        raise ConflictError("the eco2mix history bootstrap has not completed: run python -m shared bootstrap first")
    lease = _lease(store, settings)
    if not lease.acquire():
        raise ConflictError(f"another weather writer is running ({lease.describe_other()})")
    out: dict[str, Any] = {}
    with lease:
        if shipped:
            frame = read_enedis_dir(weather_dir)
            frame = frame[(frame["ts"] >= lo) & (frame["ts"] < hi)]
            totals = {"values": 0, "new": 0, "revised": 0, "written": 0}
            years = sorted(frame["ts"].dt.year.unique().tolist())
            for year in tqdm(years, desc="enedis", unit="year", disable=not progress):
                rows = enedis_rows(frame[frame["ts"].dt.year == year])
                counts = upsert(store, settings, rows, source=ENEDIS_SOURCE, batch_id=f"{BACKFILL_STAGE}-enedis-{year}")
                totals["values"] += len(rows)
                for k in ("new", "revised", "written"):
                    totals[k] += counts[k]
                lease.keep_alive()
            out["enedis"] = {**totals, "first": frame["ts"].min().isoformat() if not frame.empty else None,
                             "last": frame["ts"].max().isoformat() if not frame.empty else None}
        if archive:
            out["archive"] = _backfill_archive(store, settings, lo, hi, lease, chunk_days=chunk_days,
                                               progress=progress, transport=transport, run_id=run_id)
    log_event(log, "weather_backfill_done", **{k: v.get("written") for k, v in out.items()})
    return out


def archive_call_weight(locations: int, days: int, variables: int = 1) -> float:
    """How many calls Open-Meteo counts for one request: every location at least one, more only past 10 variables
    × 14 days (open-meteo/open-meteo, ``ForecastapiResult.calculateQueryWeight``, charged by
    ``req.incrementRateLimiter``)."""
    return locations * max(1.0, variables / 10 * days / 14)


def archive_pause_s(weight: float, chunks: int, per_minute: int, per_hour: int) -> float:
    """Seconds from the start of one archive request to the next so that ``chunks`` requests of ``weight`` calls
    stay within ``per_minute`` and, when they add up to more than it, ``per_hour`` (0: no such budget)."""
    if chunks <= 1:
        return 0.0
    pauses = [60.0 * weight / per_minute] if per_minute else []
    if per_hour and weight * chunks > per_hour:
        pauses.append(3600.0 * weight / per_hour)
    return max(pauses, default=0.0)


# what the pacing waits with (tests replace them)
_sleep, _monotonic = time.sleep, time.monotonic


def _backfill_archive(store: Store, settings: Settings, lo: pd.Timestamp, hi: pd.Timestamp, lease: Lease, *,
                      chunk_days: int, progress: bool, transport: httpx.BaseTransport | None,
                      run_id: str, client: OpenMeteoClient | None = None,
                      stage: str = BACKFILL_STAGE) -> dict[str, Any]:
    from tqdm import tqdm

    if client is None:
        from shared.weather.client import OpenMeteoClient as Client

        with Client(settings, transport=transport) as own:
            return _backfill_archive(store, settings, lo, hi, lease, chunk_days=chunk_days, progress=progress,
                                     transport=None, run_id=run_id, client=own, stage=stage)
    stations = load_stations(settings.weather_stations_file)
    ids = stations["id"].tolist()
    model = settings.weather_archive_model
    last_day = (hi - pd.Timedelta(microseconds=1)).date()
    days = pd.date_range(lo.date(), last_day, freq=f"{chunk_days}D")
    totals = {"values": 0, "rejected": 0, "hours": 0, "new": 0, "revised": 0, "written": 0}
    # Open-Meteo's free API allows 600 calls a minute, 5,000 an hour, 10,000 a day, a request of the 35 stations
    # counting 35: 2020–2023 in 31-day chunks is ~1,700 calls, which sent back to back hit the minute's limit
    # within seconds and outlasted the retries' 45-second budget
    pause = archive_pause_s(archive_call_weight(len(ids), chunk_days), len(days),
                            settings.weather_archive_calls_per_minute, settings.weather_archive_calls_per_hour)
    if pause:
        log_event(log, "weather_archive_paced", chunks=len(days), seconds_between_requests=round(pause, 1))
    next_start = 0.0  # the earliest start of the next request (monotonic clock)
    for chunk_no, first in enumerate(tqdm(list(days), desc="open-meteo archive", unit="chunk", disable=not progress)):
        if chunk_no and pause:
            _sleep(max(0.0, next_start - _monotonic()))
        next_start = _monotonic() + pause
        last = min((first + pd.Timedelta(days=chunk_days - 1)).date(), last_day)
        body, url = client.archive(stations["latitude"].tolist(), stations["longitude"].tolist(), model,
                                   start=first.date(), end=last)
        fetched_at = clock.now()
        batch_id = f"{ARCHIVE_BATCH_PREFIX}{new_batch_id(fetched_at, run_id, chunk_no)}"
        parsed, rejected = _land(store, body, url, stations, [model], stage=stage, batch_id=batch_id,
                                 fetched_at=fetched_at, what="archive answer",
                                 min_weight_share=settings.weather_min_weight_share)
        totals["rejected"] += rejected
        national = aggregate(parsed.rows, stations, settings.weather_min_weight_share)
        national = national[(national["ts"] >= lo) & (national["ts"] < hi)]
        rows = national[["ts", "value"]].assign(metric=REALISED_METRIC, nature=REALISED_NATURE,
                                                perimetre=PERIMETER)
        counts = upsert(store, settings, rows, source=SOURCE, batch_id=batch_id)
        totals["values"] += len(parsed.rows)
        totals["hours"] += len(rows)
        for k in ("new", "revised", "written"):
            totals[k] += counts[k]
        lease.keep_alive()
    return totals


def main(argv: list[str] | None = None) -> int:
    """``python -m shared weather-backfill [--start D] [--end D] [--shipped] [--archive]``."""
    import argparse

    from shared.settings import get_settings
    from shared.store import get_store
    from shared.timeutil import iso_day

    p = argparse.ArgumentParser(prog="python -m shared weather-backfill",
                                description="Load realised national temperature into measurements.")
    p.add_argument("--start", type=iso_day, default="2020-01-01", help="first day (UTC, inclusive; YYYY-MM-DD)")
    p.add_argument("--end", type=iso_day, default="2024-01-01", help="end day (UTC, exclusive; YYYY-MM-DD)")
    p.add_argument("--shipped", action="store_true",
                   help="the shipped Enedis smoothed realised + normal temperature (data/weather; the default)")
    p.add_argument("--archive", action="store_true",
                   help="Open-Meteo's archive at the weighted locations (POWERSENSE_WEATHER_ARCHIVE_URL)")
    p.add_argument("--chunk-days", type=int, default=31, help="days per archive request")
    args = p.parse_args(argv)
    if args.chunk_days < 1:
        p.error(f"--chunk-days must be at least 1 (got {args.chunk_days})")
    shipped = args.shipped or not args.archive
    settings = get_settings()
    t0 = time.perf_counter()
    result = backfill(get_store(settings), settings, date.fromisoformat(args.start), date.fromisoformat(args.end),
                      shipped=shipped, archive=args.archive, chunk_days=args.chunk_days, progress=True)
    for name, figures in result.items():
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    print(f"weather-backfill done in {time.perf_counter() - t0:.1f} s")
    return 0
