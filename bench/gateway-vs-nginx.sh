#!/usr/bin/env bash
# rempart's gateway beside nginx, in one run on this machine (BENCHMARKS.md).
#
#   bench/gateway-vs-nginx.sh [SECONDS]        (default 10 s per closed-loop run)
#
# "idle": routing and metrics only (breaker and bulkhead disabled, no rate
# limit, no stale cache). "policies": breaker, bulkhead, per-client rate limit
# (a limit no client reaches), stale cache, metrics.
#
# Layout on a 2-core machine: each proxy runs on core 0 with one worker
# (nginx: worker_processes 1; rempart: worker_threads = 1); the upstream (a
# second nginx serving fixed 100 B and 16 KiB bodies) and the load generator
# share core 1. Closed loop: wrk, 1 thread, 50 keep-alive connections. Open
# loop: the openloop example at fixed rates, latency from each request's
# scheduled start. CPU per request is the proxy process's user + system time
# over the run divided by the requests it served; RSS is read after the run.
# Needs nginx (nginx-light) and wrk from Debian; installs them if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
WORK=$(mktemp -d /tmp/rempart-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; nginx -p "$WORK/up" -c "$WORK/up/nginx.conf" -s stop 2>/dev/null || true; nginx -p "$WORK/px" -c "$WORK/px/nginx.conf" -s stop 2>/dev/null || true' EXIT

for tool in nginx wrk; do
    command -v $tool >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light wrk >/dev/null; }
done

cargo build --release -q -p rempart-cli --bin rempart
cargo build --release -q -p rempart-gateway --example openloop
REMPART=target/release/rempart
OPENLOOP=target/release/examples/openloop

# Bodies, both nginx configs and gateway_config(): shared with the
# instruction-count script.
. bench/common.sh

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
TICK=$(getconf CLK_TCK)

taskset -c 1 nginx -p "$WORK/up" -c "$WORK/up/nginx.conf"
taskset -c 0 nginx -p "$WORK/px" -c "$WORK/px/nginx.conf"
sleep 0.5
NGX_WORKER=$(pgrep -P "$(cat "$WORK/px/nginx.pid")" | head -1)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "nginx: $(nginx -v 2>&1 | cut -d/ -f2); wrk -t1 -c50 -d${SECS}s; open loop ${SECS}s"
printf '\n%-22s %-6s %10s %9s %9s %12s %9s\n' proxy body req/s p50_ms p99_ms cpu_us/req rss_MiB

closed() { # name port body pid
    local before after out reqs rps p50 p99 cpu
    [ -n "$4" ] && before=$(cpu_ticks "$4")
    out=$(taskset -c 1 wrk -t1 -c50 -d"${SECS}s" --latency "http://127.0.0.1:$2/$3")
    # A run that measured error pages measured nothing: stop.
    if echo "$out" | grep -q "Non-2xx"; then
        echo "$1 /$3 answered errors:" >&2; echo "$out" >&2; exit 1
    fi
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    if [ -n "$4" ]; then
        after=$(cpu_ticks "$4")
        cpu=$(awk -v a="$after" -v b="$before" -v n="$reqs" -v t="$TICK" 'BEGIN {printf "%.1f", (a-b)/t*1e6/n}')
        printf '%-22s %-6s %10s %9s %9s %12s %9.1f\n' "$1" "$3" "$rps" "$p50" "$p99" "$cpu" "$(awk -v k="$(rss_kib "$4")" 'BEGIN{print k/1024}')"
    else
        printf '%-22s %-6s %10s %9s %9s %12s %9s\n' "$1" "$3" "$rps" "$p50" "$p99" "-" "-"
    fi
}

openloop() { # name port body rate
    printf '%-22s %-6s %s\n' "$1" "$3" "$(taskset -c 1 "$OPENLOOP" "http://127.0.0.1:$2/$3" "$4" "$SECS" 64)"
}

for body in ${BODIES:-small large}; do
    closed "direct (no proxy)" $UP $body ""
    closed "nginx" $NGX $body "$NGX_WORKER"
    for mode in idle policies; do
        gateway_config $mode > "$WORK/gw-$mode.toml"
        taskset -c 0 "$REMPART" gateway --config "$WORK/gw-$mode.toml" > "$WORK/gw-$mode.log" 2>&1 &
        GW=$!
        for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$ADMIN/health" && break; sleep 0.1; done
        closed "rempart ($mode)" $REM $body $GW
        kill -TERM $GW; wait $GW || true
    done
done

echo
echo "open loop (latency from scheduled start):"
for rate in 5000 15000; do
    openloop "nginx" $NGX small $rate
    gateway_config policies > "$WORK/gw-open.toml"
    taskset -c 0 "$REMPART" gateway --config "$WORK/gw-open.toml" > "$WORK/gw-open.log" 2>&1 &
    GW=$!
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$ADMIN/health" && break; sleep 0.1; done
    openloop "rempart (policies)" $REM small $rate
    kill -TERM $GW; wait $GW || true
done
