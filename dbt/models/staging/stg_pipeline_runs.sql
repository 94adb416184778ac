-- One row per invocation: the final state of each run (the running row is replaced by it).
select
    function,
    run_id,
    started_at,
    argMax(trigger, updated_at) as trigger,
    argMax(status, updated_at) as status,
    argMax(finished_at, updated_at) as finished_at,
    argMax(rows_in, updated_at) as rows_in,
    argMax(rows_out, updated_at) as rows_out,
    argMax(error, updated_at) as error,
    dateDiff('millisecond', started_at, finished_at) / 1000 as duration_s
from {{ source('electricity', 'pipeline_runs') }}
group by function, run_id, started_at
