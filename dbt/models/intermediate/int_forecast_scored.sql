-- Every forecast step whose target has an actual, with its errors.
select
    f.run_id as run_id,
    f.model_version as model_version,
    f.issued_at as issued_at,
    f.ts as ts,
    f.target_local_date as target_local_date,
    f.horizon_day as horizon_day,
    f.horizon_steps as horizon_steps,
    f.quality as quality,
    f.yhat as yhat,
    f.lower as lower,
    f.upper as upper,
    f.interval_level as interval_level,
    a.load_mw as actual_mw,
    f.yhat - a.load_mw as error_mw,
    abs(f.yhat - a.load_mw) as abs_error_mw,
    abs(f.yhat - a.load_mw) / a.load_mw as abs_pct_error,
    if(f.lower is null or f.upper is null, null, toUInt8(a.load_mw between f.lower and f.upper)) as in_interval
from {{ ref('stg_forecasts') }} as f
inner join {{ ref('int_load_half_hourly') }} as a on a.ts = f.ts
where f.source = '{{ var("series_source") }}' and f.metric = '{{ var("series_metric") }}'
  and a.load_mw > 0
