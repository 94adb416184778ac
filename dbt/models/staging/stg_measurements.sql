-- Latest version of every value, with its Paris calendar date (every stored value as received: the
-- series with its best-nature choice and plausibility rule is int_series_best_nature).
select
    ts,
    source,
    metric,
    nature,
    value,
    ukey,
    version,
    inserted_at,
    toDate(ts, 'Europe/Paris') as local_date
from {{ source('electricity', 'measurements_latest') }} final
