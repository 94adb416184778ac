-- Plausibility flags and the one definition of "the series" (issues 9 and 11).
--
-- measurement_flags: the plausibility verdict on one stored version (ukey, version) of a value, from
-- shared/plausibility.py.  Values are never changed: a value that cannot be right is stored as
-- received in measurements and flagged here.  upsert-version re-evaluates the neighbourhood of every
-- window it writes and appends a row only when a verdict changes, so the table is sparse: a version
-- with no row is plausible, reason '' clears an earlier flag (a later neighbour proved the value
-- right).  A log (MergeTree), not a replacing table, so `as_of` reads see the verdicts known then.
create table if not exists electricity.measurement_flags
(
    ts          DateTime64(3, 'UTC'),
    source      LowCardinality(String),
    metric      LowCardinality(String),
    nature      LowCardinality(String),
    ukey        String,
    version     UInt64,
    value       Nullable(Float64),
    reason      LowCardinality(String),  -- '' (plausible) | non_positive | below_min | above_max | impossible_jump
    flagged_at  DateTime64(3, 'UTC')     -- shared.clock.now() of the writer (simulated in the demo)
)
engine = MergeTree
partition by toYear(ts)
order by (source, metric, ts, ukey, version, flagged_at)
settings non_replicated_deduplication_window = 1000;

-- The plausibility verdict known at as_of on each stored version (ukey, version) of one source's values in
-- [start, end): per version, the reason of its latest row in measurement_flags flagged at or before as_of
-- ('' when a later verdict cleared the flag).  A version with no row is plausible.  metric = '' reads every
-- metric of the source.  The one definition behind the series view below, the query API's version=all,
-- reflag (shared/ingest/versioning.py) and the Data quality dashboard.  Parameters (all required):
-- source, metric, start, end, as_of.
create or replace view electricity.measurement_verdicts as
select ts, metric, ukey, version, argMax(reason, flagged_at) as reason
from electricity.measurement_flags
where source = {source:String} and ({metric:String} = '' or metric = {metric:String})
  and ts >= {start:DateTime64(3, 'UTC')} and ts < {end:DateTime64(3, 'UTC')}
  and flagged_at <= {as_of:DateTime64(3, 'UTC')}
group by ts, metric, ukey, version;

-- "The series": per instant of one (source, metric) in [start, end), the latest version of the best
-- nature (définitives > consolidées > temps réel > anything else) among the versions inserted at or
-- before as_of, with the plausibility verdict known at as_of (measurement_verdicts).  Every reader uses it: shared/series.py
-- (load_series, ACTUALS_CTE → query API, metrics), dbt (int_series_best_nature) and Grafana.
--
-- Columns: ts, value, nature, nature_rank, version, inserted_at, raw_value (as received), flag ('' or
-- the plausibility reason).
--
-- An implausible value is excluded: the instant has value NULL (raw_value and flag say what was
-- received and why it was left out).  It does not fall back to an older version or a lower nature:
-- the flagged version is what the source asserts now, the older one is what the source itself has
-- replaced, so showing it would present a value nobody asserts any more; and a glitch at first
-- publication has no older version at all, so a fallback would make the same glitch look different
-- depending on its revision history.  Readers see a gap, which every stage already handles.
--
-- Parameters (all required; a parameterised view is called like a table function): source, metric,
-- start, end, as_of (pass a far-future instant for "now"), nature ('' = best nature; a nature name =
-- the latest version of that nature only).  Call it with a literal database name
-- (`electricity.series(...)`): ClickHouse's parser takes no {db:Identifier} before a table function,
-- shared/store.py writes the database name there.
create or replace view electricity.series as
with flag_state as (
    select ukey as f_ukey, version as f_version, reason as f_reason
    from electricity.measurement_verdicts(
        source = {source:String}, metric = {metric:String},
        start = {start:DateTime64(3, 'UTC')}, end = {end:DateTime64(3, 'UTC')}, as_of = {as_of:DateTime64(3, 'UTC')})
), best as (
    -- CTE columns are renamed so that an output alias never shadows an argMax argument. The value goes through a
    -- tuple: argMax skips rows whose argument is NULL (ClickHouse's argMax reference: "argMax(tuple(a), b)" keeps
    -- it), so a value the source withdrew (a NULL version) read as the value it replaced, under the new version.
    select ts as b_ts,
           tupleElement(argMax(tuple(v), (nature_rank, ver, ins)), 1) as b_value,
           argMax(n, (nature_rank, ver, ins)) as b_nature,
           argMax(ver, (nature_rank, ver, ins)) as b_version,
           argMax(ins, (nature_rank, ver, ins)) as b_inserted_at,
           argMax(k, (nature_rank, ver, ins)) as b_ukey,
           max(nature_rank) as b_nature_rank
    from (
        select ts, nature as n, value as v, version as ver, inserted_at as ins, ukey as k,
               multiIf(nature like 'Données définitives%', 3, nature like 'Données consolidées%', 2,
                       nature like 'Données temps réel%', 1, 0) as nature_rank
        from electricity.measurements
        where source = {source:String} and metric = {metric:String}
          and ts >= {start:DateTime64(3, 'UTC')} and ts < {end:DateTime64(3, 'UTC')}
          and inserted_at <= {as_of:DateTime64(3, 'UTC')}
          and ({nature:String} = '' or nature = {nature:String})
    )
    group by ts
)
select b_ts as ts,
       if(coalesce(f_reason, '') = '', b_value, NULL) as value,
       b_nature as nature,
       b_nature_rank as nature_rank,  -- 3 définitives, 2 consolidées, 1 temps réel, 0 other
       b_version as version,
       b_inserted_at as inserted_at,
       b_value as raw_value,
       toString(coalesce(f_reason, '')) as flag
from best
left join flag_state on f_ukey = b_ukey and f_version = b_version;

-- "Fresh data" (README, Data semantics): the newest instant of one (source, metric) with a valid value —
-- neither withdrawn nor implausible — within 35 days of its newest stored instant; no row when there is
-- none. The one query behind /health, the freshness gauge
-- (shared.series.latest_valid_ts), dbt's source freshness and Grafana's freshness panel. Parameters:
-- source, metric.
create or replace view electricity.series_latest_valid as
select max(ts) as ts
from electricity.series(
    source = {source:String}, metric = {metric:String},
    start = (select max(ts) from electricity.measurements
             where source = {source:String} and metric = {metric:String}) - interval 35 day,
    end = toDateTime64('2200-01-01 00:00:00', 3, 'UTC'), as_of = toDateTime64('2200-01-01 00:00:00', 3, 'UTC'),
    nature = '')
where value is not null
having count() > 0;
