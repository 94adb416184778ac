{{ config(order_by='(metric, date)') }}
-- Ingestion coverage per Paris day and metric of the series source: stored values (any nature, plausible or not)
-- against the steps expected in the day (dim_calendar). Days without any value inside a metric's observed range
-- count as 0 % covered.
with observed as (
    select
        metric,
        local_date,
        uniqExactIf(ts, value is not null) as observed_quarter_hours,
        uniqExactIf(toStartOfInterval(ts, interval 30 minute), value is not null) as observed_half_hours
    from {{ ref('stg_measurements') }}
    where source = '{{ var("series_source") }}'
    group by metric, local_date
),
metric_ranges as (
    select metric, min(local_date) as first_date, max(local_date) as last_date
    from observed
    group by metric
),
expected as (
    select r.metric as metric, c.date as date, c.day_minutes as day_minutes, c.is_dst_change as is_dst_change,
           c.expected_quarter_hours as expected_quarter_hours, c.expected_half_hours as expected_half_hours
    from {{ ref('dim_calendar') }} as c
    cross join metric_ranges as r
    where c.date between r.first_date and r.last_date
)
select
    e.date as date,
    e.metric as metric,
    concat(e.metric, '|', toString(e.date)) as coverage_key,
    e.day_minutes as day_minutes,
    e.is_dst_change as is_dst_change,
    e.expected_quarter_hours as expected_quarter_hours,
    e.expected_half_hours as expected_half_hours,
    o.observed_quarter_hours as observed_quarter_hours,
    o.observed_half_hours as observed_half_hours,
    least(1.0, o.observed_quarter_hours / e.expected_quarter_hours) as quarter_hour_coverage_ratio,
    -- consommation 2012–2019 is half-hourly by design: judge completeness on half-hours
    least(1.0, o.observed_half_hours / e.expected_half_hours) as half_hour_coverage_ratio
from expected as e
left any join observed as o on o.metric = e.metric and o.local_date = e.date
