#!/usr/bin/env bash
# Install PowerSense's infrastructure into faasd on this host. Idempotent: re-run it after every
# PowerSense upgrade (and after `faasd install`, which puts back faasd's own compose file).
#
#   sudo deploy/faasd/install.sh          # from a checkout of this repository, faasd installed
#
# What it does (the faasd facts it relies on are cited in deploy/faasd/docker-compose.powersense.yaml):
#  1. Secrets: creates each missing one under /var/lib/faasd/powersense/secrets (0700, never
#     overwritten): clickhouse_admin_password (ClickHouse `default`, the operator's), clickhouse_password
#     (powersense_writer), clickhouse_reader_password (powersense_reader), clickhouse_dbt_password
#     (powersense_dbt, README "Analytics"), grafana_clickhouse_password,
#     grafana_admin_password, s3_access_key_id ("powersense"), s3_secret_access_key, s3_reader_access_key_id
#     ("powersense-reader"), s3_reader_secret_access_key, query_token, admin_token
#     (the stages' request options: backfills, bootstrap, force_train), and
#     smtp_password (empty = no SMTP auth; set SMTP_PASSWORD=… when running this script to store one).
#     Copies what each service reads into /var/lib/faasd/powersense/mounts/<service>/, and the
#     functions' secrets to /var/lib/faasd-provider/secrets/openfaas-fn/<name>, where faasd-provider
#     keeps the secrets `faas-cli secret create` makes and where its deploy handler looks for them
#     (github:openfaas/faasd @13f03f3: cmd/provider.go `baseUserSecretsPath := path.Join(wd, "secrets")`,
#     wd being the unit's WorkingDirectory, /var/lib/faasd-provider (cmd/install.go faasdProviderWd);
#     pkg/provider/handlers/deploy.go validateSecrets reads <that>/<namespace>/<name>, mode 0644). Not
#     /var/lib/faasd/secrets: that is secret_mount_path, where the provider reads only its own basic-auth.
#  2. Configuration: copies ch/init, deploy/clickhouse, observability/{prometheus/rules,alertmanager,
#     loki,alloy,grafana} to /var/lib/faasd/powersense/config; creates the data directories with
#     the owner each service runs as; makes the journal persistent (/var/log/journal) for Alloy.
#  3. Prometheus: faasd's own Prometheus (127.0.0.1:9090) becomes PowerSense's: its prometheus.yml
#     is replaced by observability/prometheus/prometheus.yml (faasd's saved as prometheus.yml.faasd).
#  4. Compose: merges deploy/faasd/docker-compose.powersense.yaml into faasd's docker-compose.yaml
#     (faasd's saved once as docker-compose.yaml.faasd): the services, the cron-connector, and the
#     gateway's timeouts read/write 315s, upstream 310s (> every exec_timeout, longest 300s).
#  5. faasd-provider: systemd drop-in service_timeout=315s; the powersense-faasd-watchdog timer, which restarts
#     faasd when one of its services has stopped (deploy/faasd/services-watchdog.sh); daemon-reload; restarts
#     faasd-provider and faasd and enables the timer (skipped with POWERSENSE_NO_RESTART=1).
# Environment: FAASD_DIR (default /var/lib/faasd), FAASD_PROVIDER_DIR (default /var/lib/faasd-provider),
# SYSTEMD_UNIT_DIR (default /etc/systemd/system).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
faasd_dir="${FAASD_DIR:-/var/lib/faasd}"
provider_dir="${FAASD_PROVIDER_DIR:-/var/lib/faasd-provider}"
unit_dir="${SYSTEMD_UNIT_DIR:-/etc/systemd/system}"
ps="$faasd_dir/powersense"

die() { echo "install.sh: $*" >&2; exit 1; }

[[ "$(id -u)" -eq 0 ]] || die "run as root (sudo): it writes under $faasd_dir and $unit_dir"
[[ -f "$faasd_dir/docker-compose.yaml" ]] || die "faasd is not installed ($faasd_dir/docker-compose.yaml missing): see github.com/openfaas/faasd"
[[ -d "$provider_dir" ]] || die "faasd-provider's working directory $provider_dir is missing (\`faasd install\` creates it; FAASD_PROVIDER_DIR names another)"
command -v openssl >/dev/null || die "openssl is needed to generate secrets (apt-get install -y openssl)"
if ! python3 -c 'import yaml' 2>/dev/null; then
  command -v apt-get >/dev/null || die "python3 with PyYAML is needed (python3-yaml)"
  apt-get update -qq && apt-get install -y -qq python3-yaml >/dev/null
fi

install -d -m 0755 "$ps" "$ps/config" "$ps/data" "$ps/mounts"
install -d -m 0700 "$ps/secrets"

# --- 1. secrets --------------------------------------------------------------------------------------
new_secret() {  # name [value]: written once, never overwritten
  local file="$ps/secrets/$1"
  if [[ ! -e "$file" ]]; then
    (umask 077 && printf '%s' "${2:-$(openssl rand -hex 24)}" > "$file")
    echo "created secret $1"
  fi
}
for name in clickhouse_admin_password clickhouse_password clickhouse_reader_password clickhouse_dbt_password \
            grafana_clickhouse_password grafana_admin_password s3_secret_access_key query_token admin_token; do
  new_secret "$name"
done
new_secret s3_access_key_id powersense
# SeaweedFS's read-only identity (deploy/seaweedfs/s3.json): the query function's S3 keys
new_secret s3_reader_access_key_id powersense-reader
new_secret s3_reader_secret_access_key
if [[ -n "${SMTP_PASSWORD:-}" ]]; then
  (umask 077 && printf '%s' "$SMTP_PASSWORD" > "$ps/secrets/smtp_password")
elif [[ ! -e "$ps/secrets/smtp_password" ]]; then
  (umask 077 && : > "$ps/secrets/smtp_password")  # optional: no SMTP auth until one is set
fi

mount_secrets() {  # service uid secret...: the files one service reads, readable by its user only
  local uid="$2" dir="$ps/mounts/$1"
  shift 2
  install -d -m 0700 -o "$uid" "$dir"
  for name in "$@"; do
    install -m 0400 -o "$uid" "$ps/secrets/$name" "$dir/$name"
  done
}
mount_secrets clickhouse 0 clickhouse_admin_password clickhouse_password clickhouse_reader_password \
  clickhouse_dbt_password grafana_clickhouse_password
# SeaweedFS's S3 gRPC port requires a client certificate nobody holds (the script says why)
"$repo/deploy/seaweedfs/grpc-cert.sh" "$ps/secrets"
mount_secrets seaweedfs 0 s3_access_key_id s3_secret_access_key s3_reader_access_key_id s3_reader_secret_access_key s3_grpc.crt s3_grpc.key
mount_secrets grafana 472 grafana_clickhouse_password grafana_admin_password
mount_secrets alertmanager 65534 smtp_password

# the functions' secrets (openfaas-stack.yml `secrets:`), as faasd-provider stores them (in its own working
# directory, see the header), under the hyphenated names the stack uses (Kubernetes object names cannot
# contain '_': one stack for every topology)
# The files stay 0644 (faasd's own mode, handlers/secret.go: the function's non-root user reads them through
# the bind mount deploy.go makes of each file), the directory 0700: containerd mounts the files as root, and no
# other user of the host lists or reads them (faasd creates it 0755, and install -d sets the mode every run)
fn_secrets="$provider_dir/secrets/openfaas-fn"
install -d -m 0700 "$fn_secrets"
for name in clickhouse_password clickhouse_reader_password query_token admin_token s3_access_key_id \
            s3_secret_access_key s3_reader_access_key_id s3_reader_secret_access_key; do
  install -m 0644 "$ps/secrets/$name" "$fn_secrets/${name//_/-}"
done

# --- 2. configuration and data directories -----------------------------------------------------------
staging="$(mktemp -d "$ps/config.XXXXXX")"
install -d "$staging/ch" "$staging/clickhouse/config.d" "$staging/clickhouse/users.d" "$staging/prometheus" \
  "$staging/alertmanager" "$staging/loki" "$staging/alloy" "$staging/grafana" "$staging/seaweedfs"
cp -r "$repo/ch/init" "$staging/ch/init"
cp "$repo/deploy/clickhouse/config.d/prometheus.xml" "$repo/deploy/clickhouse/config.d/system_logs.xml" \
  "$staging/clickhouse/config.d/"
cp "$repo/deploy/clickhouse/users.d/powersense.xml" "$staging/clickhouse/users.d/"
cp "$repo/deploy/seaweedfs/s3.json" "$staging/seaweedfs/"
cp -r "$repo/observability/prometheus/rules" "$staging/prometheus/rules"
cp "$repo/observability/alertmanager/alertmanager.yml" "$staging/alertmanager/"
cp "$repo/observability/loki/config.yml" "$staging/loki/"
# the shared pipeline + faasd's source (the journal); `alloy run /etc/alloy` loads both
cp "$repo/observability/alloy/config.alloy" "$repo/observability/alloy/journal.alloy" "$staging/alloy/"
cp -r "$repo/observability/grafana/provisioning" "$staging/grafana/provisioning"
cp -r "$repo/observability/grafana/dashboards" "$staging/grafana/dashboards"
chmod -R u=rwX,go=rX "$staging"
rm -rf "$ps/config.old"
if [[ -d "$ps/config" ]]; then mv "$ps/config" "$ps/config.old"; fi
mv "$staging" "$ps/config"
rm -rf "$ps/config.old"

data_dir() {  # name uid
  install -d -m 0750 -o "$2" "$ps/data/$1"
}
data_dir clickhouse 0
data_dir clickhouse-logs 0
data_dir seaweedfs 0
data_dir pushgateway 65534
data_dir alertmanager 65534
data_dir loki 10001
data_dir alloy 0
data_dir grafana 472

# Alloy reads the persistent journal; journald writes there once the directory exists
if [[ ! -d /var/log/journal ]]; then
  install -d -m 2755 /var/log/journal
  if [[ "${POWERSENSE_NO_RESTART:-0}" != 1 ]]; then
    systemd-tmpfiles --create --prefix /var/log/journal
    systemctl restart systemd-journald
  fi
fi

# --- 3. Prometheus -------------------------------------------------------------------------------------
if [[ -f "$faasd_dir/prometheus.yml" && ! -f "$faasd_dir/prometheus.yml.faasd" ]]; then
  cp "$faasd_dir/prometheus.yml" "$faasd_dir/prometheus.yml.faasd"
fi
install -m 0644 "$repo/observability/prometheus/prometheus.yml" "$faasd_dir/prometheus.yml"

# --- 4. compose ---------------------------------------------------------------------------------------
if [[ ! -f "$faasd_dir/docker-compose.yaml.faasd" ]]; then
  cp "$faasd_dir/docker-compose.yaml" "$faasd_dir/docker-compose.yaml.faasd"
fi
python3 "$repo/deploy/faasd/merge_compose.py" "$faasd_dir/docker-compose.yaml" \
  "$repo/deploy/faasd/docker-compose.powersense.yaml"

# --- 5. faasd-provider timeout, restart ------------------------------------------------------------------
install -d -m 0755 "$unit_dir/faasd-provider.service.d"
install -m 0644 "$repo/deploy/faasd/faasd-provider-timeouts.conf" \
  "$unit_dir/faasd-provider.service.d/powersense-timeouts.conf"
# faasd never restarts a service that stopped: a timer does (services-watchdog.sh says how)
install -d -m 0755 "$ps/bin"
install -m 0755 "$repo/deploy/faasd/services-watchdog.sh" "$ps/bin/services-watchdog.sh"
sed -e "s|@FAASD_DIR@|$faasd_dir|" -e "s|@WATCHDOG@|$ps/bin/services-watchdog.sh|" \
  "$repo/deploy/faasd/powersense-faasd-watchdog.service" > "$unit_dir/powersense-faasd-watchdog.service"
install -m 0644 "$repo/deploy/faasd/powersense-faasd-watchdog.timer" "$unit_dir/powersense-faasd-watchdog.timer"
if [[ "${POWERSENSE_NO_RESTART:-0}" != 1 ]]; then
  systemctl daemon-reload
  systemctl restart faasd-provider
  systemctl restart faasd
  systemctl enable --now powersense-faasd-watchdog.timer
fi

cat <<EOF
PowerSense infrastructure installed into faasd ($faasd_dir/docker-compose.yaml).
Next (README, faasd topology):
  faas-cli login --password-stdin < $faasd_dir/secrets/basic-auth-password
  export REGISTRY=… TAG=…    # a registry this host can pull from (faasd-provider pulls every image at deploy)
  faas-cli build -f openfaas-stack.yml && faas-cli push -f openfaas-stack.yml
  POWERSENSE_TOPOLOGY=faasd faas-cli deploy -f openfaas-stack.yml --timeout 10m   # from the repository root
Grafana: http://127.0.0.1:3000 (admin, password in $ps/secrets/grafana_admin_password)
EOF
