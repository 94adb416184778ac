-- The fingerprint (sha256) of the DDL a writer applied, as rendered for its server (single node or cluster).
-- Store.apply_schema inserts it after every statement succeeded; at the next start-up a writer whose DDL has
-- the same fingerprint, on a server holding every object the DDL creates, applies nothing. On a cluster each
-- ON CLUSTER statement waits for every host (up to distributed_ddl_task_timeout, 180 s by default) and then
-- fails: re-applying ~50 of them at every cold start made a function's first invocation outlast its
-- exec_timeout, and a single host down stopped every writer from starting. Cluster rendering: replicated on
-- every host, not sharded (shared/schema.py UNSHARDED_TABLES), so the check reads the local copy.
create table if not exists electricity.schema_fingerprints
(
    fingerprint  String,
    statements   UInt32,
    applied_at   DateTime64(3, 'UTC') default now64(3)
)
engine = MergeTree
order by fingerprint;
