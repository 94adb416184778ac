-- Every issued forecast step, with the Paris date of its target.
select
    run_id,
    model_version,
    issued_at,
    origin,
    source,
    metric,
    ts,
    horizon_steps,
    horizon_day,
    yhat,
    lower,
    upper,
    interval_level,
    quality,
    fallback_reason,
    toDate(ts, 'Europe/Paris') as target_local_date,
    concat(run_id, '|', toString(ts)) as forecast_key
from {{ source('electricity', 'forecasts') }} final
