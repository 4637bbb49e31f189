#!/usr/bin/env bash
# make bench: side-by-side benchmarks of picogate, nginx (seed and tuned configs), kubectl proxy and direct
# HTTPS against one local control plane; writes docs/benchmarks.{json,md}. Needs `make controlplane build`.
# Arguments (or BENCH_ARGS, for make) go to picobench, e.g.:
#   scripts/bench.sh --quick --targets nginx-tuned,picogate-token --workloads get
#   make bench-fleet                                     # the fleet-scale tables (firmware, agent, nginx baseline)
#   scripts/bench.sh --fleet 200 --fleet-modes firmware --fleet-baseline 200 --fleet-ramp 10s --fleet-steady 40s
set -euo pipefail
cd "$(dirname "$0")/.."

# nginx from Debian's package. picobench runs its own instance (nginx -c FILE -p DIR), never the service.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "bench: nginx not found; installing it from Debian's packages" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx-light \
    || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx
fi

for b in picogate picosim kubectl kube-apiserver etcd; do
  [ -x "bin/$b" ] || { echo "bench: bin/$b missing: run make controlplane build" >&2; exit 1; }
done
go build -o bin/picobench ./cmd/picobench
# CPU profiles of the picogate targets go to tmp/ (git-ignored); the report shows their top functions.
# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
exec ./bin/picobench --cpuprofile tmp/bench-profiles "$@" ${BENCH_ARGS:-}
