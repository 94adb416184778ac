{{ config(order_by='date') }}
-- One row per Paris calendar day, with French public holidays and the day's length: 23 h on the
-- spring-forward Sunday, 25 h on the fall-back Sunday. The expected steps are the day's length less, on the
-- fall-back Sunday, the first occurrence of the repeated hour, which RTE never publishes (var ignore_fallback_gap =
-- POWERSENSE_DETECT_IGNORE_FALLBACK_GAP): shared.calendar.expected_steps, which poll's gap proof, detect's
-- completeness and the Grafana coverage panel count with (tests/test_ops_sql.py ties them day by day).
with days as (
    select toDate('{{ var("calendar_start") }}') + number as date
    from numbers(toUInt64(dateDiff('day', toDate('{{ var("calendar_start") }}'), toDate('{{ var("calendar_end") }}')) + 1))
),
day_lengths as (
    select
        date,
        dateDiff('minute', toDateTime(date, 'Europe/Paris'), toDateTime(date + 1, 'Europe/Paris')) as day_minutes
    from days
)
select
    d.date as date,
    toYear(d.date) as year,
    toMonth(d.date) as month,
    toDayOfMonth(d.date) as day_of_month,
    toISOWeek(d.date) as iso_week,
    toDayOfWeek(d.date) as day_of_week,
    toUInt8(toDayOfWeek(d.date) >= 6) as is_weekend,
    toUInt8(h.name != '') as is_holiday,
    h.name as holiday_name,
    d.day_minutes as day_minutes,
    toUInt8(d.day_minutes != 1440) as is_dst_change,
    intDiv(d.day_minutes - if(d.day_minutes = 1500, {{ 60 if var("ignore_fallback_gap") else 0 }}, 0), 15)
        as expected_quarter_hours,
    intDiv(d.day_minutes - if(d.day_minutes = 1500, {{ 60 if var("ignore_fallback_gap") else 0 }}, 0), 30)
        as expected_half_hours
from day_lengths as d
left any join {{ ref('fr_public_holidays') }} as h on h.date = d.date
