-- poll's completeness proof (shared/ingest/poll.py): one row per (source, local Paris day) that had
-- quarter-hours missing when poll read it, replaced (ReplacingMergeTree(updated_at)) each time poll
-- re-reads that day. status: open (re-read on later ticks, the run is 'partial') | source_incomplete
-- (still missing after POWERSENSE_POLL_GAP_MAX_ATTEMPTS attempts: the source lacks the data, e.g.
-- 2023-10-14, or sent it in records PowerSense rejects, which the reason says (see rejected_records);
-- reported, no longer re-read on purpose, healed if a later read finds the values) |
-- resolved (every expected quarter-hour arrived). The fall-back day's first 02:xx hour, which RTE never
-- publishes, and spring-forward padding rows are not expected. Read with FINAL.
create table if not exists electricity.poll_gaps
(
    source           LowCardinality(String),   -- the polled dataset, e.g. eco2mix-national-tr
    day              Date,                     -- local Europe/Paris day
    window_start     DateTime64(3, 'UTC'),     -- the local day as a UTC range [start, end)
    window_end       DateTime64(3, 'UTC'),
    status           LowCardinality(String),   -- open | source_incomplete | resolved
    expected         UInt32,                   -- quarter-hours expected in the part of the day read last
    missing          Array(DateTime64(3, 'UTC')),  -- quarter-hours still missing (whole day)
    attempts         UInt32,                   -- reads that found the gap, counted at most every POLL_GAP_RETRY_MIN
    first_seen_at    DateTime64(3, 'UTC'),     -- product clock (shared.clock)
    last_attempt_at  DateTime64(3, 'UTC'),
    reason           String,
    run_id           String,
    updated_at       DateTime64(3, 'UTC')      -- product clock, strictly increasing per process
)
engine = ReplacingMergeTree(updated_at)
order by (source, day);
