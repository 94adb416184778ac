{{ config(order_by='hour_utc') }}
-- Hourly consumption from the half-hourly series, with the Paris date and hour for reporting.
select
    toStartOfHour(ts) as hour_utc,
    toDate(toStartOfHour(ts), 'Europe/Paris') as local_date,
    toHour(toStartOfHour(ts), 'Europe/Paris') as local_hour,
    avg(load_mw) as load_mw_avg,
    min(load_mw) as load_mw_min,
    max(load_mw) as load_mw_max,
    -- each half-hour contributes its mean power × 0.5 h
    sum(load_mw) * 0.5 as energy_mwh,
    count() as half_hours_observed,
    toUInt8(count() = 2) as is_complete
from {{ ref('int_load_half_hourly') }}
group by hour_utc
