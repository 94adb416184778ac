-- Mean consumption per half-hour, for energy reporting (fct_load_hourly): 15-min values (2000–2011, 2020–) are
-- averaged into their half-hour; 2012–2019 definitive data are half-hourly already. Not the forecasts' grid, which
-- is the value AT each half-hour instant (shared.features.build_grid; int_forecast_scored scores against those).
with series_points as (
    select source, toStartOfInterval(ts, interval 30 minute) as step_ts, best_value as value,
           best_nature_rank as nature_rank
    from {{ ref('int_series_best_nature') }}
    where source = '{{ var("series_source") }}' and metric = '{{ var("series_metric") }}'
)
select
    source,
    step_ts as ts,
    avg(value) as load_mw,
    count() as values_in_step,
    min(nature_rank) as min_nature_rank
from series_points
group by source, step_ts
