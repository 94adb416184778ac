-- "The series": per (source, metric, ts) the latest version of the best available nature
-- (définitives > consolidées > temps réel > other), as shared/series.py reads it for forecasting.
with ranked as (
    select source, metric, ts, nature, nature_rank, value, version, inserted_at
    from {{ ref('stg_measurements') }}
    where value is not null
)
select
    source,
    metric,
    ts,
    argMax(value, (nature_rank, version, inserted_at)) as best_value,
    argMax(nature, (nature_rank, version, inserted_at)) as best_nature,
    max(nature_rank) as best_nature_rank,
    count() as natures_available,
    concat(source, '|', metric, '|', toString(ts)) as point_key
from ranked
group by source, metric, ts
