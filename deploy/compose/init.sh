#!/usr/bin/env bash
# Prepare the plain-compose topology (docker-compose.yml) on this host; idempotent.
#  1. .env: created from deploy/env.example with a distinct random value for every change-me-*
#     (an existing .env is kept as it is; a variable a newer env.example adds, e.g. POWERSENSE_DBT_PASSWORD, is
#     appended to it, a change-me-* one with a fresh random value).
#  2. var/secrets/<name>: one file per secret the services read, written from .env on every run
#     (so a changed .env value reaches the containers at the next `docker-compose up -d`):
#       clickhouse_password         = POWERSENSE_WRITER_PASSWORD  (writing functions)
#       clickhouse_reader_password  = POWERSENSE_READER_PASSWORD  (query)
#       query_token                 = QUERY_TOKEN                 (query's bearer token)
#       admin_token                 = ADMIN_TOKEN                 (the stages' request options)
#       s3_access_key_id            = S3_ACCESS_KEY_ID            (forecast: SeaweedFS's admin identity)
#       s3_secret_access_key        = S3_SECRET_ACCESS_KEY        (forecast)
#       s3_reader_access_key_id     = S3_READER_ACCESS_KEY_ID     (query: the read-only identity, s3.json)
#       s3_reader_secret_access_key = S3_READER_SECRET_ACCESS_KEY (query)
#       smtp_password               = SMTP_PASSWORD, may be empty (alertmanager)
#     The directory is 0700 (nobody else on the host reads it); the files are 0644 because compose
#     bind-mounts them and the containers run as non-root users (10001, nobody).
#  3. var/secrets/seaweedfs/s3_grpc.{crt,key}: the certificate that closes the S3 gRPC port of SeaweedFS
#     (deploy/seaweedfs/grpc-cert.sh; created once, kept after).
# Usage: deploy/compose/init.sh   (from anywhere; works on the repository root)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

# a line of deploy/env.example as .env holds it: a change-me-* value becomes a fresh random one
env_line() {
  if [[ "$1" =~ ^([A-Z0-9_]+)=change-me- ]]; then
    printf '%s=%s\n' "${BASH_REMATCH[1]}" "$(openssl rand -hex 24)"
  else
    printf '%s\n' "$1"
  fi
}

if [[ ! -f .env ]]; then
  umask 077
  while IFS= read -r line; do env_line "$line"; done < deploy/env.example > .env
  echo "wrote .env with fresh secrets"
else
  # an upgrade: what the kept .env lacks (docker-compose.yml requires every ${VAR:?…}) is added, never changed
  while IFS= read -r line; do
    if [[ "$line" =~ ^([A-Z0-9_]+)= ]]; then
      name="${BASH_REMATCH[1]}"
      if ! grep -q "^${name}=" .env; then
        env_line "$line" >> .env
        echo "added $name to .env"
      fi
    fi
  done < deploy/env.example
fi

# shellcheck disable=SC1091  # .env is generated above
set -a && source ./.env && set +a

declare -A secrets=(
  [clickhouse_password]="${POWERSENSE_WRITER_PASSWORD:?POWERSENSE_WRITER_PASSWORD missing in .env}"
  [clickhouse_reader_password]="${POWERSENSE_READER_PASSWORD:?POWERSENSE_READER_PASSWORD missing in .env}"
  [query_token]="${QUERY_TOKEN:?QUERY_TOKEN missing in .env}"
  [admin_token]="${ADMIN_TOKEN:?ADMIN_TOKEN missing in .env}"
  [s3_access_key_id]="${S3_ACCESS_KEY_ID:?S3_ACCESS_KEY_ID missing in .env}"
  [s3_secret_access_key]="${S3_SECRET_ACCESS_KEY:?S3_SECRET_ACCESS_KEY missing in .env}"
  [s3_reader_access_key_id]="${S3_READER_ACCESS_KEY_ID:?S3_READER_ACCESS_KEY_ID missing in .env}"
  [s3_reader_secret_access_key]="${S3_READER_SECRET_ACCESS_KEY:?S3_READER_SECRET_ACCESS_KEY missing in .env}"
  [smtp_password]="${SMTP_PASSWORD:-}"
)

install -d -m 0700 var/secrets
mkdir -p var/logs  # Alloy tails the embedded runtime's JSON lines here
for name in "${!secrets[@]}"; do
  printf '%s' "${secrets[$name]}" > "var/secrets/$name.tmp"
  chmod 0644 "var/secrets/$name.tmp"
  mv "var/secrets/$name.tmp" "var/secrets/$name"
done
echo "wrote var/secrets/{$(printf '%s,' "${!secrets[@]}" | sed 's/,$//')}"
deploy/seaweedfs/grpc-cert.sh var/secrets/seaweedfs
