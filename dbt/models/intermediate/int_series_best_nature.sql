-- "The series" of the configured source and metric: per instant the latest version of the best
-- available nature (définitives > consolidées > temps réel > other), implausible values left out —
-- read from the parameterised view `series` (ch/init/007.series.sql), the one definition shared with
-- the functions (shared/series.py) and Grafana. Instants without a value (withdrawn or implausible)
-- have no row here.
select
    '{{ var("series_source") }}' as source,
    '{{ var("series_metric") }}' as metric,
    ts,
    value as best_value,
    nature as best_nature,
    nature_rank as best_nature_rank,
    version as best_version,
    concat(source, '|', metric, '|', toString(ts)) as point_key
from {{ source('electricity', 'series') }}(
    source = '{{ var("series_source") }}', metric = '{{ var("series_metric") }}',
    start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00', as_of = '2200-01-01 00:00:00', nature = '')
where value is not null
