-- Latest version of every value, with its nature rank and Paris calendar date.
select
    ts,
    source,
    metric,
    nature,
    {{ nature_rank('nature') }} as nature_rank,
    value,
    ukey,
    version,
    inserted_at,
    toDate(ts, 'Europe/Paris') as local_date
from {{ source('electricity', 'measurements_latest') }} final
