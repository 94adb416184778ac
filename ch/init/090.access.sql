-- Server only (the embedded runtime skips access control statements).
-- Read-only users for the query function and Grafana: SELECT on the electricity database only.
create user if not exists powersense_reader identified with sha256_password by 'change-me-reader' settings readonly = 1;
grant select on electricity.* to powersense_reader;
create user if not exists grafana identified with sha256_password by 'change-me-grafana' settings readonly = 1;
grant select on electricity.* to grafana;
