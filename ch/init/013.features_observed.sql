-- The series as published at each grid instant, before the training-data gate and interpolation (issue 11):
-- detect judges the values the source sent (a flatline the gate rejects is what detect must see), so it reads
-- these rather than `value`. featurize writes them at every resolution it writes; detect reads the 15-min grid
-- (shared/features.py DETECT_RESOLUTION_MIN). Features written before this upgrade have observed_version 0
-- (= "no measurement"): recompute them once (truncate electricity.features; the next featurize run rebuilds it).
alter table electricity.features add column if not exists observed Nullable(Float64) after implausible_reason;
alter table electricity.features add column if not exists observed_flag LowCardinality(String) default '' after observed;
alter table electricity.features add column if not exists observed_version UInt64 default 0 after observed_flag;
