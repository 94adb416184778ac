-- A day cannot hold more distinct steps than it has: more would mean a time-zone bug upstream. (The day's length,
-- not the expected steps: a source that publishes the fall-back day's first repeated hour is not a bug.)
select date, metric, observed_quarter_hours, day_minutes
from {{ ref('fct_daily_coverage') }}
where observed_quarter_hours > intDiv(day_minutes, 15)
   or observed_half_hours > intDiv(day_minutes, 30)
