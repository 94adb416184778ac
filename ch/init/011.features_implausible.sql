-- The training-data gate's verdict on each grid instant (shared/features.py series_grid): featurize writes the
-- gated grid, so a rejected value is a gap (interpolated when short) and these say why. The forecast stage
-- reads its grid and flags from here. Existing rows get 0 / ''; features written before this upgrade hold
-- ungated values: recompute them once (truncate electricity.features; the next featurize run rebuilds it).
alter table electricity.features add column if not exists implausible UInt8 default 0 after missing;
alter table electricity.features add column if not exists implausible_reason LowCardinality(String) default '' after implausible;
