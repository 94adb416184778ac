#!/usr/bin/env bash
# Every Kubernetes Secret PowerSense needs, created idempotently (README "Kubernetes", step 4):
#   deploy/kubernetes/secrets.sh            (kubectl pointed at the cluster; namespaces already applied)
# A value comes from the environment variable named in its line when set, else the existing Secret's
# value is kept, else a random one is generated - so a re-run never rotates a password by accident.
# Nothing is written to disk (but a certificate, briefly: see seaweedfs-grpc). The same value is used
# wherever two components must agree (the writer password in ClickHouse's users and in the functions'
# clickhouse-password, the S3 keys in SeaweedFS and in the functions' s3 secrets).
#
# Function secrets (namespace openfaas-fn) carry the names openfaas-stack.yml lists. Kubernetes object
# names cannot contain '_' (RFC 1123), so they are hyphenated; faas-netes mounts each data key as
# /var/openfaas/secrets/<key> (github:openfaas/faas-netes pkg/k8s/secrets.go ConfigureSecrets), and
# Settings reads the hyphenated file names (shared/settings.py _HyphenatedSecrets). The label is the
# one faas-netes gives the secrets it creates, so `faas-cli secret list` shows them.
set -euo pipefail
# a failure inside $(…) stops the script too (bash does not pass -e into command substitutions otherwise)
shopt -s inherit_errexit

INFRA_NS=powersense
FN_NS=openfaas-fn

# current value of key $3 in Secret $2 of namespace $1, or nothing when the Secret or the key is absent.
# --ignore-not-found: an absent Secret prints nothing and exits 0; any other failure (RBAC forbidden, a timeout,
# throttling) stops the script. It used to read as "absent", and a new random value then replaced the password
# the running ClickHouse and functions still held.
existing() {
  local data
  data="$(kubectl get secret -n "$1" "$2" --ignore-not-found -o "jsonpath={.data.$3}")"
  if [ -n "$data" ]; then printf '%s' "$data" | base64 -d; fi
}

# value NS SECRET KEY ENVVAR: from $ENVVAR, else the existing Secret, else random
value() {
  local from_env="${!4:-}"
  if [ -n "$from_env" ]; then printf '%s' "$from_env"; return; fi
  local current; current="$(existing "$1" "$2" "$3")"
  if [ -n "$current" ]; then printf '%s' "$current"; return; fi
  openssl rand -hex 24
}

# apply NS NAME [LABEL] KEY=VALUE...: create or update Secret NAME
apply() {
  local ns="$1" name="$2"; shift 2
  local label=""
  if [ "${1:-}" = "--openfaas" ]; then label="app.kubernetes.io/managed-by=openfaas"; shift; fi
  local args=()
  for kv in "$@"; do args+=("--from-literal=$kv"); done
  kubectl create secret generic "$name" -n "$ns" "${args[@]}" --dry-run=client -o yaml \
    | { if [ -n "$label" ]; then kubectl label --local -f - "$label" -o yaml; else cat; fi; } \
    | kubectl apply -f -
}

ADMIN_PW="$(value "$INFRA_NS" clickhouse-users admin_password CLICKHOUSE_PASSWORD)"
WRITER_PW="$(value "$INFRA_NS" clickhouse-users writer_password POWERSENSE_WRITER_PASSWORD)"
READER_PW="$(value "$INFRA_NS" clickhouse-users reader_password POWERSENSE_READER_PASSWORD)"
GRAFANA_CH_PW="$(value "$INFRA_NS" clickhouse-users grafana_password GRAFANA_CLICKHOUSE_PASSWORD)"
DBT_PW="$(value "$INFRA_NS" clickhouse-users dbt_password POWERSENSE_DBT_PASSWORD)"
S3_KEY="$(value "$INFRA_NS" seaweedfs-s3 access_key_id S3_ACCESS_KEY_ID)"
S3_SECRET="$(value "$INFRA_NS" seaweedfs-s3 secret_access_key S3_SECRET_ACCESS_KEY)"
S3_READER_KEY="$(value "$INFRA_NS" seaweedfs-s3 reader_access_key_id S3_READER_ACCESS_KEY_ID)"
S3_READER_SECRET="$(value "$INFRA_NS" seaweedfs-s3 reader_secret_access_key S3_READER_SECRET_ACCESS_KEY)"
GRAFANA_ADMIN_PW="$(value "$INFRA_NS" grafana-admin admin_password GRAFANA_ADMIN_PASSWORD)"
QUERY_TOKEN="$(value "$FN_NS" query-token query-token QUERY_TOKEN)"
ADMIN_TOKEN="$(value "$FN_NS" admin-token admin-token ADMIN_TOKEN)"
SMTP_PW="${SMTP_PASSWORD:-$(existing "$INFRA_NS" alertmanager-smtp smtp_password)}"

# --- infrastructure (namespace powersense) -------------------------------------------------------
# ClickHouse users (clickhouse/installation.yaml: valueFrom.secretKeyRef) and Grafana's data source
apply "$INFRA_NS" clickhouse-users admin_password="$ADMIN_PW" writer_password="$WRITER_PW" \
  reader_password="$READER_PW" grafana_password="$GRAFANA_CH_PW" dbt_password="$DBT_PW"
# SeaweedFS's S3 identities (seaweedfs.yaml): the admin, and the read-only one of deploy/seaweedfs/s3.json
apply "$INFRA_NS" seaweedfs-s3 access_key_id="$S3_KEY" secret_access_key="$S3_SECRET" \
  reader_access_key_id="$S3_READER_KEY" reader_secret_access_key="$S3_READER_SECRET"
# the certificate that closes SeaweedFS's S3 gRPC port (seaweedfs.yaml; deploy/seaweedfs/grpc-cert.sh says
# why): created once, an existing Secret is kept; its files exist on disk only while it is created
if ! kubectl get secret -n "$INFRA_NS" seaweedfs-grpc >/dev/null 2>&1; then
  cert_dir="$(mktemp -d)"
  "$(dirname "${BASH_SOURCE[0]}")/../seaweedfs/grpc-cert.sh" "$cert_dir" >/dev/null
  kubectl create secret tls seaweedfs-grpc -n "$INFRA_NS" --cert="$cert_dir/s3_grpc.crt" --key="$cert_dir/s3_grpc.key"
  rm -rf "$cert_dir"
fi
# Grafana's admin login (grafana.yaml)
apply "$INFRA_NS" grafana-admin admin_password="$GRAFANA_ADMIN_PW"
# Alertmanager's SMTP password file (alertmanager.yaml; empty unless SMTP_PASSWORD is set)
apply "$INFRA_NS" alertmanager-smtp smtp_password="$SMTP_PW"

# --- functions (namespace openfaas-fn; names as in openfaas-stack.yml) ----------------------------
apply "$FN_NS" clickhouse-password --openfaas clickhouse-password="$WRITER_PW"
apply "$FN_NS" clickhouse-reader-password --openfaas clickhouse-reader-password="$READER_PW"
apply "$FN_NS" query-token --openfaas query-token="$QUERY_TOKEN"
apply "$FN_NS" admin-token --openfaas admin-token="$ADMIN_TOKEN"
apply "$FN_NS" s3-access-key-id --openfaas s3-access-key-id="$S3_KEY"
apply "$FN_NS" s3-secret-access-key --openfaas s3-secret-access-key="$S3_SECRET"
apply "$FN_NS" s3-reader-access-key-id --openfaas s3-reader-access-key-id="$S3_READER_KEY"
apply "$FN_NS" s3-reader-secret-access-key --openfaas s3-reader-secret-access-key="$S3_READER_SECRET"

echo "secrets ready. Query token:  kubectl get secret -n $FN_NS query-token -o jsonpath='{.data.query-token}' | base64 -d"
