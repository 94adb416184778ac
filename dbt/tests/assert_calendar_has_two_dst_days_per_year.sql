-- Every full calendar year has exactly one 23-hour and one 25-hour Paris day.
select year, countIf(day_minutes = 1380) as short_days, countIf(day_minutes = 1500) as long_days
from {{ ref('dim_calendar') }}
group by year
having count() >= 365 and (short_days != 1 or long_days != 1)
