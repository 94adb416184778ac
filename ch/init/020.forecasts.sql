-- Every forecast run is kept, so accuracy can be computed per lead time later.
create table if not exists electricity.forecasts
(
    run_id          String,
    model_version   String,                 -- artifact version, '' for a fallback run
    issued_at       DateTime64(3, 'UTC'),   -- when the forecast was made
    origin          DateTime64(3, 'UTC'),   -- first target step (last observed step + 1)
    source          LowCardinality(String),
    metric          LowCardinality(String),
    ts              DateTime64(3, 'UTC'),   -- target time (start of the step)
    horizon_steps   UInt16,                 -- 1 = first step after the last observation
    horizon_day     UInt8,                  -- D+k in Europe/Paris calendar days after issued_at's local day
    yhat            Float64,
    lower           Nullable(Float64),
    upper           Nullable(Float64),
    interval_level  Float32,                -- e.g. 0.8 for an 80-percent prediction interval (no percent sign here: the driver formats DDL)
    quality         LowCardinality(String), -- 'model' | 'fallback'
    fallback_reason String
)
engine = ReplacingMergeTree
partition by toYYYYMM(issued_at)
order by (source, metric, issued_at, run_id, ts);
