-- The weather features of the forecast grid, as known at each featurize run (issue 12; written by featurize,
-- shared/weather/featurize.py; read by forecast). One run = one as_of (the run's time on the product clock):
--   part 'past'     ts < as_of: realised national temperature (Open-Meteo archive, else the shipped Enedis series)
--                   as stored at as_of; the hours after the newest realised one are the latest forecast for them
--   part 'forecast' ts >= as_of: the latest national temperature forecast stored at as_of (open_meteo temperature_2m)
-- then derived by shared.weather.features.known_at (smoothing continues from the past into the forecast).
-- A run writes only when weather measurements newer than its watermark exist; its past part covers the window new
-- realised data changed (at least the last two days, so each run's path stands alone for a forecast), its forecast
-- part the whole stored forecast. Training reads, per ts, the past row of the newest run; prediction reads the
-- newest run with as_of <= now.
create table if not exists electricity.weather_features
(
    resolution_min      UInt16,
    as_of               DateTime64(3, 'UTC'),   -- featurize run: what was known then (product clock)
    ts                  DateTime64(3, 'UTC'),   -- start of the grid step
    part                LowCardinality(String), -- 'past' | 'forecast'
    temp_source         LowCardinality(String), -- open_meteo_realised | enedis_realised | open_meteo_forecast | ''
    temp_degc           Nullable(Float64),      -- national temperature on the grid
    temp_smooth_degc    Nullable(Float64),      -- exponentially smoothed (shared/weather/features.py)
    hdd_smooth          Nullable(Float64),      -- heating degrees of the smoothed temperature
    cdd_smooth          Nullable(Float64),      -- cooling degrees of the smoothed temperature
    issued_at           Nullable(DateTime64(3, 'UTC')), -- issue time of the newest forecast version known at as_of
    source_inserted_max DateTime64(3, 'UTC'),   -- watermark: newest weather measurements.inserted_at featurized
    computed_at         DateTime64(3, 'UTC')
)
engine = ReplacingMergeTree(computed_at)
partition by toYYYYMM(as_of)
order by (resolution_min, as_of, ts)
-- A run's forecast part is read only while the run is the newest (read_weather_run; the forecast stage calls it stale
-- after POWERSENSE_WEATHER_MAX_AGE_H) and every later run supersedes it: deleted 30 days after it was written, by
-- ClickHouse's TTL merges (~17 k rows a day otherwise, never read again). computed_at is the wall clock, so a replay on
-- a simulated clock keeps its runs. The past parts stay (training reads them), and every temperature forecast
-- received stays in measurements for ever (real-forecast backtests read it there: shared/weather/provider.py).
-- In the create statement, not an alter: the writer user holds no ALTER TTL (a TTL can delete any table's rows), so
-- an install created before this TTL gets it from an administrator once (README, Weather in production).
ttl toDateTime(computed_at) + interval 30 day delete where part = 'forecast';
