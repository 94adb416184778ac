-- A day cannot hold more distinct steps than it has: more would mean a time-zone bug upstream.
select date, metric, observed_quarter_hours, expected_quarter_hours
from {{ ref('fct_daily_coverage') }}
where observed_quarter_hours > expected_quarter_hours
   or observed_half_hours > expected_half_hours
