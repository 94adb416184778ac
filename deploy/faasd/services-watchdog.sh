#!/usr/bin/env bash
# Restart faasd when one of its services has stopped: faasd starts each service once and never watches it
# (github:openfaas/faasd @13f03f3 pkg/supervisor.go Start: NewTask, task.Start, nothing after), and its unit's
# Restart=on-failure (hack/faasd.service) covers only the `faasd up` process. An OOM-killed ClickHouse, or a
# stopped Prometheus or Alertmanager (no alert could say so), stayed down until someone ran
# `systemctl restart faasd`. `faasd up` removes and recreates every service (cmd/up.go: Remove, then Start), so
# a restart brings the stopped one back; data and secrets are host directories and survive it.
#
# Run every minute by powersense-faasd-watchdog.timer (deploy/faasd/install.sh installs both units). Each run:
#  - does nothing while faasd is not active, or became active less than POWERSENSE_WATCHDOG_GRACE_S (300) ago
#    (`faasd up` is still pulling and creating the services);
#  - lists the services of faasd's docker-compose.yaml and the tasks of containerd namespace "openfaas"
#    (pkg/constants.go FaasdNamespace; each task is named after its service: supervisor.go NewContainer(svc.Name));
#  - when a service has no RUNNING task, logs which (the journal, which Alloy ships to Loki) and restarts faasd,
#    at most once per POWERSENSE_WATCHDOG_BACKOFF_S (600): a service that cannot start is reported every run,
#    and every service is not taken down every minute for it.
# Environment: FAASD_DIR (default /var/lib/faasd), POWERSENSE_WATCHDOG_STATE (the last restart's time, default
# $FAASD_DIR/powersense/watchdog-last-restart).
set -euo pipefail

faasd_dir="${FAASD_DIR:-/var/lib/faasd}"
state="${POWERSENSE_WATCHDOG_STATE:-$faasd_dir/powersense/watchdog-last-restart}"
grace_s="${POWERSENSE_WATCHDOG_GRACE_S:-300}"
backoff_s="${POWERSENSE_WATCHDOG_BACKOFF_S:-600}"

log() { echo "powersense-faasd-watchdog: $*"; }

[[ "$(systemctl is-active faasd || true)" == active ]] || { log "faasd is not active: nothing to watch"; exit 0; }
# monotonic microseconds since boot at which faasd last became active, against the system's uptime
entered_us="$(systemctl show -p ActiveEnterTimestampMonotonic --value faasd)"
uptime_s="$(cut -d' ' -f1 /proc/uptime)"
uptime_s="${uptime_s%.*}"
if (( uptime_s - entered_us / 1000000 < grace_s )); then
  exit 0
fi

mapfile -t services < <(python3 -c 'import sys, yaml; print("\n".join(yaml.safe_load(open(sys.argv[1]))["services"]))' \
  "$faasd_dir/docker-compose.yaml")
running="$(ctr -n openfaas task ls | awk 'NR > 1 && $3 == "RUNNING" {print $1}')"
stopped=()
for name in "${services[@]}"; do
  grep -qxF "$name" <<<"$running" || stopped+=("$name")
done
(( ${#stopped[@]} )) || exit 0

log "not running: ${stopped[*]}"
now="$(date +%s)"
last="$(cat "$state" 2>/dev/null || echo 0)"
if (( now - last < backoff_s )); then
  log "faasd was restarted $(( now - last )) s ago: not again before ${backoff_s} s"
  exit 0
fi
echo "$now" > "$state"
log "restarting faasd"
systemctl restart faasd
