#!/usr/bin/env bash
# make demo: a local control plane (etcd, kube-apiserver, scheduler, controller-manager), picogate in
# per-device mode, 3 simulated Picos and a Deployment running on them. Ctrl-C stops everything.
#   DEMO_DEVICES=3  DEMO_PORT=6080  DEMO_DURATION=  (e.g. 2m to stop by itself)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
STATE=$PWD/tmp/demo
DEVICES=${DEMO_DEVICES:-3}
PORT=${DEMO_PORT:-6080}
ADMIN_PORT=${DEMO_ADMIN_PORT:-6081}
rm -rf "$STATE" && mkdir -p "$STATE"
K=$STATE/cluster/admin.kubeconfig
pids=()

say() { printf '\r\033[K\033[1m==> %s\033[0m\n' "$*"; }
cleanup() {
  trap - INT TERM EXIT
  printf '\r\033[K'
  say "stopping"
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  say "stopped; logs were in $STATE"
}
trap cleanup INT TERM EXIT
kc() { "$BIN/kubectl" --kubeconfig "$K" "$@"; }
wait_for() { # seconds, description, command...
  local t=$1 what=$2; shift 2
  for ((i=0; i<t*5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "demo: timed out waiting for $what (logs in $STATE)" >&2; return 1
}

say "starting a local control plane (etcd, kube-apiserver with Node,RBAC + NodeRestriction like k3s, scheduler, controller-manager)"
"$BIN/picolab" up --dir "$STATE/cluster" >"$STATE/picolab.log" 2>&1 &
pids+=($!)
wait_for 120 "the control plane" test -s "$K"
wait_for 60 "the API server" kc get --raw /readyz

say "starting picogate serve on :$PORT (devices) and 127.0.0.1:$ADMIN_PORT (fleet dashboard, health, metrics)"
"$BIN/picogate" serve --kubeconfig "$K" --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" >"$STATE/picogate.log" 2>&1 &
pids+=($!)
wait_for 30 "picogate /readyz" curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz"
say "fleet dashboard: http://127.0.0.1:$ADMIN_PORT/ (open it in a browser on this machine)"

say "provisioning $DEVICES devices: picogate device add --count $DEVICES --prefix pico- -o json"
"$BIN/picogate" device add --kubeconfig "$K" --count "$DEVICES" --prefix pico- -o json >"$STATE/devices.json"
"$BIN/picogate" device list --kubeconfig "$K"
kc apply -f deploy/examples/pico-config.yaml -f deploy/examples/fleet-config-rbac.yaml >/dev/null

(
  ready() { [ "$(kc get nodes -l picogate.io/board=rp2040 --no-headers 2>/dev/null | grep -c ' Ready')" -ge "$DEVICES" ]; }
  running() { [ "$(kc get pods -l app=blink --no-headers 2>/dev/null | grep -c ' Running')" -ge "$DEVICES" ]; }
  wait_for 90 "$DEVICES Ready Pico nodes" ready || exit 0
  say "$DEVICES Pico nodes Ready; applying an example Deployment for them (deploy/examples/blink-deployment.yaml)"
  kc apply -f deploy/examples/blink-deployment.yaml >/dev/null
  wait_for 90 "the pods to run" running || exit 0
  say "kubectl get nodes,pods -o wide"
  kc get nodes,pods -o wide | sed 's/^/    /'
  say "picogate's metrics: curl -s 127.0.0.1:$ADMIN_PORT/metrics | grep picogate_requests_total"
  curl -s "127.0.0.1:$ADMIN_PORT/metrics" | grep '^picogate_requests_total' | sed 's/^/    /'
  say "a device's view (curl as pico-1, token from $STATE/devices.json):"
  tok=$(sed -n 's/.*"token": "\(pgt_[^"]*\)".*/\1/p' "$STATE/devices.json" | head -1)
  printf '    $ curl -H "Authorization: Bearer pgt_…" http://127.0.0.1:%s/api/v1/nodes/pico-2\n    ' "$PORT"
  curl -s -H "Authorization: Bearer $tok" "http://127.0.0.1:$PORT/api/v1/nodes/pico-2"; echo
  say "live fleet summary below, the dashboard at http://127.0.0.1:$ADMIN_PORT/; Ctrl-C stops and cleans up"
) &
pids+=($!)

say "running picosim: $DEVICES virtual Picos through the gateway, each as its own node"
args=(--gateway "http://127.0.0.1:$PORT" --credentials "$STATE/devices.json" --report-json "$STATE/report.json")
[ -n "${DEMO_DURATION:-}" ] && args+=(--duration "$DEMO_DURATION")
"$BIN/picosim" "${args[@]}"
