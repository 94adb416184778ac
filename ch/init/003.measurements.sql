-- Every revision of every value. One row per (ukey, version); version increments only when the
-- value for a ukey changes. ukey determines (source, metric, ts), so the sorting key
-- (source, metric, ts, ukey, version) deduplicates exactly on (ukey, version) while time-range
-- reads of one metric scan a contiguous key range.
create table if not exists electricity.measurements
(
    ts           DateTime64(3, 'UTC'),
    source       LowCardinality(String),
    metric       LowCardinality(String),
    nature       LowCardinality(String),
    value        Nullable(Float64),
    ukey         String,
    version      UInt64,
    batch_id     String,
    inserted_at  DateTime64(3, 'UTC') default now64(3)
)
engine = ReplacingMergeTree(inserted_at)
partition by toYear(ts)
primary key (source, metric, ts)
order by (source, metric, ts, ukey, version)
settings non_replicated_deduplication_window = 1000;

-- Latest version per ukey, maintained on insert. ReplacingMergeTree(version) keeps the highest
-- version; read it with FINAL (or argMax) until background merges collapse older versions.
create table if not exists electricity.measurements_latest
(
    ts           DateTime64(3, 'UTC'),
    source       LowCardinality(String),
    metric       LowCardinality(String),
    nature       LowCardinality(String),
    value        Nullable(Float64),
    ukey         String,
    version      UInt64,
    inserted_at  DateTime64(3, 'UTC')
)
engine = ReplacingMergeTree(version)
partition by toYear(ts)
primary key (source, metric, ts)
order by (source, metric, ts, ukey);

create materialized view if not exists electricity.measurements_latest_mv
to electricity.measurements_latest
as select ts, source, metric, nature, value, ukey, version, inserted_at
from electricity.measurements;
