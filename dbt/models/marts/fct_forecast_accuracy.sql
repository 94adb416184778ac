{{ config(order_by='(horizon_day, target_local_date, model_version)') }}
-- Forecast accuracy per target Paris day, horizon day (D+k) and model version.
select
    target_local_date,
    horizon_day,
    model_version,
    concat(toString(target_local_date), '|', toString(horizon_day), '|', model_version) as accuracy_key,
    uniqExact(run_id) as runs,
    count() as scored_steps,
    avg(abs_error_mw) as mae_mw,
    sqrt(avg(error_mw * error_mw)) as rmse_mw,
    avg(error_mw) as bias_mw,
    avg(abs_pct_error) as mape_ratio,
    avg(in_interval) as interval_coverage_ratio,
    avg(interval_level) as nominal_interval_level,
    countIf(quality = 'fallback') / count() as fallback_ratio
from {{ ref('int_forecast_scored') }}
group by target_local_date, horizon_day, model_version
