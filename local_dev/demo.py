"""``make demo``: bootstrap the embedded store from the shipped history, then serve every function
behind the gateway with the cron-connector and the replay of real data on a simulated clock."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.settings import REPO_ROOT

DEFAULT_START = "2023-12-01T00:00:00Z"
WEATHER_REPLAY_PREFIX = "/replay/open-meteo"


def _parse_time(value: str) -> datetime:
    """An ISO 8601 instant (UTC when it has no offset); an argparse type, so a bad one is one usage line."""
    try:
        ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 instant (e.g. 2023-12-01T00:00:00Z)") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse type: a number above 0 (``--speed 0`` froze the simulated clock: no tick ever came)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0 (got {text})")
        return value

    return parse


def _port(text: str) -> int:
    """An argparse type: a TCP port (99999 was a traceback from the gateway's socket)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1–65535 (got {value})")
    return value


def ensure_secrets(secrets_dir: Path) -> dict[str, str]:
    """Create the local secrets (query bearer token, the stages' admin token, gateway password) once; return the
    new ones."""
    secrets_dir.mkdir(parents=True, exist_ok=True)
    created = {}
    for name in ("query_token", "admin_token", "gateway_password"):
        path = secrets_dir / name
        if not path.exists():
            value = secrets.token_urlsafe(32)
            path.write_text(value)
            path.chmod(0o600)
            created[name] = value
    return created


def clock_start(newest: datetime | None, start: datetime, bootstrapped: bool) -> tuple[datetime, bool]:
    """Where the simulated clock starts, and whether that is a resume: ``start`` before the bootstrap is done (an
    empty store, or an interrupted bootstrap, which reloads up to ``start``); else the quarter-hour after the newest
    stored value, whatever ``start`` says. A restart without ``--start`` after a first run with an earlier one used
    to jump to the default start: months the poll then fetched a month per run, and a weather model whose realised
    temperature had a hole of those months."""
    # chDB's max() over no row is the epoch, not NULL (a bootstrap that loaded nothing before an early --start)
    if newest is None or newest.replace(tzinfo=UTC) <= datetime(1970, 1, 1, tzinfo=UTC) or not bootstrapped:
        return start, False
    return newest.replace(tzinfo=UTC) + timedelta(minutes=15), True


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options of the demo."""
    p = argparse.ArgumentParser(prog="python -m local_dev demo", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=os.environ.get("POWERSENSE_GATEWAY_PORT", "8080"))
    p.add_argument("--data-dir", type=Path, default=REPO_ROOT / "var", help="chDB, artifacts and secrets live here")
    p.add_argument("--start", type=_parse_time, default=None,
                   help="simulated clock start (UTC) on first run (default: POWERSENSE_REPLAY_START, else "
                        f"{DEFAULT_START}); a restart resumes after the newest stored value")
    p.add_argument("--speed", type=_positive(float), default=os.environ.get("POWERSENSE_REPLAY_SPEED", "60"),
                   help="simulated seconds per real second (60: a 5-min poll every 5 s)")
    p.add_argument("--ticks", type=_positive(int), default=None,
                   help="fire this many cron ticks, waiting for each, then exit (scripted use)")
    p.add_argument("--source-url", default=None,
                   help="poll this ODRÉ-compatible API instead of the local replay (e.g. the real ODRÉ)")
    p.add_argument("--weather-url", default=None,
                   help="Open-Meteo-compatible forecast API base (e.g. the real https://api.open-meteo.com/v1) "
                        "instead of the local weather replay (which serves realised temperature as 'forecast')")
    args = p.parse_args(argv)
    # the first run's start when --start is not given; a bad value is one usage line too, before anything is made
    try:
        args.first_start = _parse_time(os.environ.get("POWERSENSE_REPLAY_START", DEFAULT_START))
    except argparse.ArgumentTypeError as exc:
        p.error(f"POWERSENSE_REPLAY_START: {exc}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the demo until Ctrl-C (or ``--ticks`` ticks)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    data_dir: Path = args.data_dir.resolve()
    secrets_dir = data_dir / "secrets"
    created = ensure_secrets(secrets_dir)
    # Settings are read from the environment once per process: set everything before importing them.
    os.environ["POWERSENSE_SECRETS_DIR"] = str(secrets_dir)
    os.environ.setdefault("POWERSENSE_CHDB_PATH", str(data_dir / "chdb"))
    os.environ.setdefault("POWERSENSE_ARTIFACTS_DIR", str(data_dir / "artifacts"))
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("POWERSENSE_LOG_FILE", str(data_dir / "logs" / "powersense.jsonl"))
    gateway_url = f"http://{args.host}:{args.port}"
    os.environ["POWERSENSE_SOURCE_URL"] = args.source_url or f"{gateway_url}/replay/api/explore/v2.1"
    # The weather replay (local_dev/weather_replay.py) is mounted under the ODRÉ replay at /replay/open-meteo.
    weather_replay = f"{gateway_url}{WEATHER_REPLAY_PREFIX}/v1"
    os.environ["POWERSENSE_WEATHER_URL"] = args.weather_url or weather_replay
    if args.weather_url is None:
        os.environ["POWERSENSE_WEATHER_ARCHIVE_URL"] = weather_replay

    import uvicorn

    from local_dev.cron import CronConnector, Invocation
    from local_dev.gateway import create_gateway_app
    from local_dev.stack import read_stack
    from shared import clock
    from shared.ingest.versioning import bootstrap_done
    from shared.logs import configure_logging
    from shared.settings import get_settings
    from shared.store import get_store

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_file)  # JSON lines to var/logs; console gets a summary
    store = get_store(settings)

    newest = store.scalar(
        "select max(ts) from {db:Identifier}.measurements where metric = {m:String} and value is not null",
        {"m": settings.series_metric},
    )
    start, resumed = clock_start(newest, args.start or args.first_start, bootstrap_done(store))
    if args.source_url is None:
        os.environ["POWERSENSE_HISTORY_UNTIL"] = start.isoformat()
        get_settings.cache_clear()
        settings = get_settings()

    print(f"PowerSense demo — data in {data_dir}")
    if resumed and args.start is not None and args.start != start:
        print(f"note: --start is for a first run; this data directory resumes at {start.isoformat()} (a new "
              "--data-dir starts afresh)")
    from shared.ingest.bootstrap import bootstrap

    if not bootstrap_done(store):  # first run, or a bootstrap that was interrupted: (re)load up to `start`
        if args.source_url is None:
            # One clock for the product: the history is known before the replay starts, so its versions
            # get inserted_at just before `start` on the simulated clock (as_of reads, watermarks)
            clock.install(clock.SimulatedClock(start - timedelta(seconds=30), 0.0))
        t0 = time.perf_counter()
        result = bootstrap(store, settings, until=start, progress=True)
        print(f"bootstrap: {_fmt(result)} in {time.perf_counter() - t0:.1f} s")
    weather = _load_realised_temperature(store, settings, start, simulated=args.source_url is None)
    if weather:
        print(f"temperature: {weather}")
    counts = store.query_rows(
        "select count(), uniqExact(ukey), max(version) from {db:Identifier}.measurements"
    )[0]
    print(f"store: {counts[0]:,} measurement rows, {counts[1]:,} ukeys, max version {counts[2]}")

    app = create_gateway_app()
    mounted = args.weather_url is None and mount_weather_replay(app)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            print(f"gateway failed to start on {gateway_url}", file=sys.stderr)
            return 1
        time.sleep(0.05)

    if args.weather_url is None and mounted:
        realised = _load_realised_archive(store, settings, start, simulated=args.source_url is None)
        if realised:
            print(f"temperature: {realised}")
    if args.source_url is None:
        # starts now that everything is up, just before `start` so that the tick at `start` fires
        clock.install(clock.SimulatedClock(start - timedelta(seconds=30), args.speed))
    print(f"gateway: {gateway_url}  (functions: {', '.join(app.apps)})")
    print(f"logs:    {settings.log_file} (JSON lines)")
    print(f"source:  {os.environ['POWERSENSE_SOURCE_URL']}")
    print(f"weather: {os.environ['POWERSENSE_WEATHER_URL']}"
          + (" (replay: shipped REALISED temperature served as the 'forecast', not a forecast)"
             if args.weather_url is None else ""))
    if args.source_url is None:
        print(f"clock:   simulated from {start.isoformat()} at {args.speed:g}x" + (" (resumed)" if resumed else ""))
    if "query_token" in created:
        print(f"query token (shown once, stored in {secrets_dir}/query_token): {created['query_token']}")
    if "gateway_password" in created:
        print(f"gateway basic auth for /system/*: {settings.gateway_user} / {created['gateway_password']}")
    print(f'try:     curl -H "Authorization: Bearer $(cat {secrets_dir}/query_token)" '
          f"'{gateway_url}/function/query/health'")
    print(f"options: a stage's request options (backfills, force_train) need Authorization: Bearer "
          f"$(cat {secrets_dir}/admin_token)")

    def report(inv: Invocation) -> None:
        body: dict[str, Any] = inv.body or {}
        status = body.get("status", inv.error or f"HTTP {inv.status_code}")
        print(f"[{inv.scheduled_for:%Y-%m-%d %H:%M}] {inv.function:<15} {status:<8} "
              f"in={body.get('rows_in', '-')} out={body.get('rows_out', '-')} {inv.duration_s:.2f}s", flush=True)

    cron = CronConnector(gateway_url, read_stack(), on_result=report)
    stop = threading.Event()

    def _interrupt(signum: int, frame: Any) -> None:
        print("\nstopping: waiting for running invocations …", flush=True)
        stop.set()
        cron.stop()

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        ticks = cron.run(max_ticks=args.ticks, wait_each_tick=args.ticks is not None, speed=args.speed)
    finally:
        cron.close()
        server.should_exit = True
        thread.join(timeout=10)
    counts = store.query_rows("select count(), max(version) from {db:Identifier}.measurements")[0]
    print(f"stopped after {ticks} cron ticks; store: {counts[0]:,} measurement rows, max version {counts[1]}; "
          "a restart resumes from here")
    return 0


def _fmt(result: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, dict | list))


def mount_weather_replay(gateway: Any) -> bool:
    """Serve the Open-Meteo replay under the gateway's ODRÉ replay, at ``/replay/open-meteo/v1/…``
    (False when the gateway runs without a replay)."""
    from local_dev.weather_replay import create_weather_replay_app

    if gateway.replay is None:
        return False
    prefix = WEATHER_REPLAY_PREFIX.removeprefix("/replay")
    inner = create_weather_replay_app()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        # The gateway hands the ODRÉ replay its path without "/replay" (root_path "/replay"), and a
        # Starlette Mount keeps the path as is: route the inner app on what follows the mount prefix.
        path = scope.get("path", "")
        for head in (scope.get("root_path", ""), prefix):
            if head and path.startswith(head + "/"):
                path = path[len(head):]
                break
        await inner({**scope, "path": path, "raw_path": path.encode(), "root_path": ""}, receive, send)

    gateway.replay.mount(prefix, app)
    return True


def _load_realised_temperature(store: Any, settings: Any, start: datetime, *, simulated: bool) -> str | None:
    """Load the shipped realised temperature (Enedis, before ``start`` only: no look-ahead) once.

    On the simulated clock it is known just before the replay starts, like the eco2mix history.
    """
    from shared import clock
    from shared.weather import ENEDIS_SOURCE
    from shared.weather.service import backfill

    if store.scalar("select count() from (select 1 from {db:Identifier}.measurements "
                    "where source = {s:String} limit 1)", {"s": ENEDIS_SOURCE}):
        return None
    if simulated:
        clock.install(clock.SimulatedClock(start - timedelta(seconds=30), 0.0))
    t0 = time.perf_counter()
    result = backfill(store, settings, datetime(2020, 1, 1, tzinfo=UTC), start, shipped=True, progress=True)
    enedis = result.get("enedis", {})
    return (f"realised temperature (Enedis, shipped) values={enedis.get('values')} written={enedis.get('written')} "
            f"until {start.isoformat()} in {time.perf_counter() - t0:.1f} s")


def _load_realised_archive(store: Any, settings: Any, start: datetime, *, simulated: bool) -> str | None:
    """Fill ``open_meteo/temperature_2m_realised`` once from the replay's archive endpoint (over HTTP,
    through the gateway), up to what the archive serves before ``start``; poll-weather then catches it
    up daily.  In the demo these values are the shipped Enedis realised temperature (see
    local_dev/weather_replay.py): labelled, not Open-Meteo's reanalysis."""
    from shared import clock
    from shared.weather import REALISED_METRIC, SOURCE
    from shared.weather.service import backfill

    if store.scalar("select count() from (select 1 from {db:Identifier}.measurements "
                    "where source = {s:String} and metric = {m:String} limit 1)",
                    {"s": SOURCE, "m": REALISED_METRIC}):
        return None
    if simulated:
        clock.install(clock.SimulatedClock(start - timedelta(seconds=30), 0.0))
    t0 = time.perf_counter()
    # the local replay has no rate limit: no pacing to Open-Meteo's budget (60 s more for the demo's 16 chunks)
    unpaced = settings.model_copy(update={"weather_archive_calls_per_minute": 0, "weather_archive_calls_per_hour": 0})
    result = backfill(store, unpaced, datetime(2020, 1, 9, tzinfo=UTC), start, shipped=False, archive=True,
                      chunk_days=92, progress=True)
    archive = result.get("archive", {})
    return (f"realised temperature (replay archive = shipped Enedis values) hours={archive.get('hours')} "
            f"written={archive.get('written')} in {time.perf_counter() - t0:.1f} s")
