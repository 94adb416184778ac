-- PowerSense schema, applied idempotently by both runtimes (chDB embedded and ClickHouse server).
create database if not exists electricity;
