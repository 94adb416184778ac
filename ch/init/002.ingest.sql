-- Landing zone of poll: one row per fetched page (the batch header) and one per raw record.
create table if not exists electricity.raw_batches
(
    batch_id      String,
    fetched_at    DateTime64(3, 'UTC'),
    source_url    String,
    window_start  DateTime64(3, 'UTC'),
    window_end    DateTime64(3, 'UTC'),
    page          UInt32,
    n_records     UInt32,
    n_rejected    UInt32,
    run_id        String
)
engine = ReplacingMergeTree(fetched_at)
order by batch_id
settings non_replicated_deduplication_window = 1000;

create table if not exists electricity.raw_records
(
    batch_id    String,
    record_no   UInt32,
    fetched_at  DateTime64(3, 'UTC'),
    source_url  String,
    payload     String  -- the record exactly as received (JSON)
)
engine = ReplacingMergeTree(fetched_at)
order by (batch_id, record_no)
settings non_replicated_deduplication_window = 1000;

-- Dead letter: records that could not be parsed or violate the source contract, with the reason.
create table if not exists electricity.rejected_records
(
    batch_id     String,
    record_no    UInt32,
    stage        LowCardinality(String),
    reason       String,
    payload      String,
    rejected_at  DateTime64(3, 'UTC') default now64(3)
)
engine = ReplacingMergeTree(rejected_at)
order by (stage, batch_id, record_no)
settings non_replicated_deduplication_window = 1000;

-- upsert-version marks a batch done here, after its measurements are inserted.
create table if not exists electricity.batch_versions
(
    batch_id      String,
    versioned_at  DateTime64(3, 'UTC') default now64(3),
    rows_in       UInt32,
    rows_out      UInt32,
    run_id        String
)
engine = ReplacingMergeTree(versioned_at)
order by batch_id;
