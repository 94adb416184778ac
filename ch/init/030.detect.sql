-- detect stage outputs: anomalies, data-quality checks, model metrics (drift, accuracy, retrain requests).

-- One row per anomalous point and kind. The key (source, metric, kind, detector, ts) makes re-runs over
-- the same window idempotent; a later state of the same point (resolved, reopened) is a new row with a
-- higher updated_at, and FINAL keeps the latest. Rows are never deleted: an anomaly explained by a revised
-- value gets status 'resolved' with the reason. The forecast stage excludes status = 'open' points from
-- its next training window.
create table if not exists electricity.anomalies
(
    ts               DateTime64(3, 'UTC'),
    source           LowCardinality(String),
    metric           LowCardinality(String),
    kind             LowCardinality(String),   -- spike | dip | level_shift | flatline | missing | implausible | interpolated
    detector         LowCardinality(String),   -- residual | zscore | plausibility | gate
    severity         LowCardinality(String),   -- low | medium | high
    value            Nullable(Float64),        -- the actual (NULL for missing)
    value_version    UInt64,                   -- measurements version the decision saw
    expected         Nullable(Float64),
    lower            Nullable(Float64),
    upper            Nullable(Float64),
    score            Nullable(Float64),        -- robust z of the residual
    threshold        Nullable(Float64),
    -- the forecast behind the expectation: its model version ('profile' = no forecast covered the point, the
    -- seasonal profile alone; '' = a simple-model fallback forecast, or a detector without an expectation) and
    -- its run (forecasts.run_id; '' = none): GET /forecasts?run_id= shows its quality and fallback_reason
    model_version    String,
    forecast_run_id  String,
    detected_at      DateTime64(3, 'UTC'),     -- first run that raised it
    run_id           String,
    status           LowCardinality(String),   -- open | resolved
    resolved_at      Nullable(DateTime64(3, 'UTC')),
    resolution       String,                   -- e.g. 'revised value', 'value arrived', 'reclassified as level_shift'
    updated_at       DateTime64(3, 'UTC') default now64(3)
)
engine = ReplacingMergeTree(updated_at)
partition by toYYYYMM(ts)
order by (source, metric, kind, detector, ts);

-- One row per check per scope per run (a log: freshness over time, completeness per local day, …).
create table if not exists electricity.data_quality
(
    checked_at  DateTime64(3, 'UTC'),
    run_id      String,
    source      LowCardinality(String),
    metric      LowCardinality(String),
    check       LowCardinality(String),  -- completeness | freshness | duplicates | dead_letter | out_of_range | revisions
    scope       String,                  -- local day 'YYYY-MM-DD', nature, or 'window'
    value       Float64,
    expected    Nullable(Float64),
    status      LowCardinality(String),  -- ok | warn | fail
    details     String                   -- JSON
)
engine = MergeTree
partition by toYYYYMM(checked_at)
order by (source, metric, check, scope, checked_at);

-- Accuracy per horizon day, interval coverage, PSI per time of day; kind = 'retrain_request' rows ask
-- the forecast stage to retrain early (name = the breached measure, details = figures).
create table if not exists electricity.model_metrics
(
    computed_at    DateTime64(3, 'UTC'),
    run_id         String,
    source         LowCardinality(String),
    metric         LowCardinality(String),
    kind           LowCardinality(String),  -- accuracy | coverage | psi | retrain_request
    name           LowCardinality(String),  -- mape | mae | bias | coverage | psi | reason of the request
    horizon_day    UInt8,                   -- D+k (0 when not applicable)
    scope          String,                  -- 'all', a time-of-day bucket, …
    model_version  String,
    window_start   DateTime64(3, 'UTC'),
    window_end     DateTime64(3, 'UTC'),
    value          Float64,
    threshold      Nullable(Float64),
    n              UInt32,
    breached       UInt8,
    details        String
)
engine = ReplacingMergeTree(computed_at)
partition by toYYYYMM(computed_at)
order by (source, metric, kind, name, horizon_day, scope, computed_at);
