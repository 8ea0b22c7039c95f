#!/usr/bin/env bash
# User-space instructions per proxied request, rempart beside nginx, counted
# by callgrind (BENCHMARKS.md). Unlike CPU time, the count does not move with
# what else the machine is doing, so small changes show.
#
#   bench/gateway-instructions.sh [SECONDS]    (default 8 s of load per proxy)
#
# Each proxy runs under `valgrind --tool=callgrind` on core 0 (nginx with one
# process: master_process off); the upstream (nginx) and wrk (1 thread, 20
# connections) share core 1. Per request = (instructions over the run −
# instructions of the same start and stop without load) ÷ requests served.
# Counts user space only: the kernel's share (about two thirds of a proxy's
# CPU here) is not in them. Needs valgrind, nginx and wrk; installs the last
# two if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}
WORK=$(mktemp -d /tmp/rempart-instr.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; nginx -p "$WORK/up" -c "$WORK/up/nginx.conf" -s stop 2>/dev/null || true' EXIT

for tool in nginx wrk; do
    command -v $tool >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light wrk >/dev/null; }
done
command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 1; }

cargo build --release -q -p rempart-cli --bin rempart
REMPART=target/release/rempart
. bench/common.sh
# Something else answering on a proxy's port would be measured instead of it.
for port in $UP $NGX $REM $ADMIN; do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
        echo "port $port is already in use: stop what listens there first" >&2
        exit 1
    fi
done
# The proxying nginx in the foreground, one process, so callgrind sees it all.
sed 's/^daemon on;/daemon off; master_process off;/' "$WORK/px/nginx.conf" > "$WORK/px/nginx-fg.conf"
taskset -c 1 nginx -p "$WORK/up" -c "$WORK/up/nginx.conf"

# count NAME PORT BODY LOAD(0|1) -- CMD...: instructions of CMD under callgrind
# while wrk loads PORT for SECS (LOAD=1) or not at all; prints "Ir requests".
count() {
    local port=$2 body=$3 load=$4 out="$WORK/cg.$1" n=0 pid
    shift 5
    taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/$body" && break; sleep 0.2; done
    if [ "$load" = 1 ]; then
        n=$(taskset -c 1 wrk -t1 -c20 -d"${SECS}s" "http://127.0.0.1:$port/$body" | awk '/requests in/ {print $1}')
    fi
    kill -QUIT "$pid" 2>/dev/null || true  # nginx: graceful stop
    kill -TERM "$pid" 2>/dev/null || true  # rempart: drain and exit
    wait "$pid" || true
    echo "$(awk '/^summary:/ {print $2; exit}' "$out") $n"
}

per_request() { # NAME PORT BODY -- CMD...
    local name=$1 port=$2 body=$3 base loaded
    shift 4
    read -r base _ < <(count "$name.0" "$port" "$body" 0 -- "$@")
    read -r loaded n < <(count "$name.1" "$port" "$body" 1 -- "$@")
    printf '%-20s %-6s %9s requests %8d instructions/request\n' "$name" "$body" "$n" $(((loaded - base) / n))
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); nginx $(nginx -v 2>&1 | cut -d/ -f2); $(valgrind --version)"
for body in small large; do
    per_request nginx $NGX $body -- nginx -p "$WORK/px" -c "$WORK/px/nginx-fg.conf"
    for mode in idle policies; do
        gateway_config $mode > "$WORK/gw-$mode.toml"
        per_request "rempart ($mode)" $REM $body -- "$REMPART" gateway --config "$WORK/gw-$mode.toml"
    done
done
