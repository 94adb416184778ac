-- Leases: single-flight across threads, processes, pods and hosts (shared/lease.py). Every claim of a
-- lease is one row for epoch N+1 inserted with insert_deduplication_token '<lease>:<name>:<N+1>:claim':
-- block deduplication commits the first of several concurrent claims of the same epoch and drops the
-- others (non-replicated MergeTree: the deduplication log is checked and the part committed under one
-- parts lock, src/Storages/MergeTree/MergeTreeSink.cpp; Replicated*MergeTree: the block id is created
-- in Keeper in the same multi-op as the part), so exactly one holder can read its own row back.
-- Renewal claims the next epoch; release writes a 'release' row for the holder's epoch. Times are the
-- server's clock (now64), never a pod's. Rows are never deleted (a few hundred thousand a year):
-- removing old epochs would let a new claim reuse a remembered deduplication token.
-- Cluster rendering: NOT sharded and never behind a Distributed table (claims of one epoch must meet in
-- one deduplication scope): one ReplicatedMergeTree replicated on every node, Keeper path without
-- {shard}; shared/lease.py writes with insert_quorum and reads with select_sequential_consistency.
create table if not exists electricity.leases
(
    name         LowCardinality(String),   -- what is leased, e.g. 'measurements-writer'
    epoch        UInt64,                   -- 1, 2, 3 … per name; every claim and renewal is a new epoch
    kind         LowCardinality(String),   -- claim | release
    holder       String,                   -- host:pid:random id of the claimant
    ttl_ms       UInt64,
    acquired_at  DateTime64(3, 'UTC') default now64(3),                                      -- server clock
    expires_at   DateTime64(3, 'UTC') default acquired_at + toIntervalMillisecond(ttl_ms)    -- server clock
)
engine = MergeTree
order by (name, epoch, kind)
settings non_replicated_deduplication_window = 10000;
