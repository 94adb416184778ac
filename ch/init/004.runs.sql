-- One row per function invocation (a 'running' row at start, replaced by the final row).
create table if not exists electricity.pipeline_runs
(
    function     LowCardinality(String),
    run_id       String,
    trigger      LowCardinality(String),
    started_at   DateTime64(3, 'UTC'),
    finished_at  Nullable(DateTime64(3, 'UTC')),
    status       LowCardinality(String),  -- running | success | partial | skipped | failed
    rows_in      UInt64,
    rows_out     UInt64,
    error        String,
    details      String,  -- JSON with stage-specific figures
    updated_at   DateTime64(3, 'UTC') default now64(3)
)
engine = ReplacingMergeTree(updated_at)
order by (function, started_at, run_id);
