-- Features of the forecast series on a regular grid (featurize stage). One row per (series, resolution, ts);
-- a recomputation inserts a newer computed_at and replaces the row on merge (read with FINAL).
create table if not exists electricity.features
(
    source              LowCardinality(String),
    metric              LowCardinality(String),
    resolution_min      UInt16,
    ts                  DateTime64(3, 'UTC'),   -- start of the grid step
    value               Nullable(Float64),      -- measured, or linearly interpolated inside a short gap
    interpolated        UInt8,                  -- 1 = value interpolated (gap of at most max_interp_steps)
    missing             UInt8,                  -- 1 = inside a longer gap: value, and features using it, NULL
    lag_1               Nullable(Float64),      -- value one step before
    lag_1d              Nullable(Float64),
    lag_1w              Nullable(Float64),
    roll_mean_1d        Nullable(Float64),      -- rolling windows end strictly before ts
    roll_std_1d         Nullable(Float64),
    roll_mean_1w        Nullable(Float64),
    roll_std_1w         Nullable(Float64),
    local_minute        UInt16,                 -- Europe/Paris minute of day
    dow                 UInt8,                  -- 0 = Monday (local)
    month               UInt8,
    is_holiday          UInt8,                  -- French public holiday (holidays package)
    holiday_name        LowCardinality(String),
    is_bridge           UInt8,                  -- Monday before a Tuesday holiday / Friday after a Thursday one
    is_dst_transition   UInt8,                  -- local day of a summer/winter time change
    is_summer_time      UInt8,
    temp_normal_degc    Nullable(Float64),      -- Enedis normal temperature (climatology: known for any date)
    temp_observed_degc  Nullable(Float64),      -- Enedis realised smoothed temperature where shipped (≤ 2023)
    hdd_normal          Nullable(Float64),      -- max(15 − normal, 0)
    cdd_normal          Nullable(Float64),      -- max(normal − 18, 0)
    source_inserted_max DateTime64(3, 'UTC'),   -- watermark: newest measurements.inserted_at featurized
    computed_at         DateTime64(3, 'UTC')
)
engine = ReplacingMergeTree(computed_at)
partition by toYear(ts)
order by (source, metric, resolution_min, ts);
