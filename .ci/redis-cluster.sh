#!/usr/bin/env bash
# Starts or stops a 3-master Redis Cluster on loopback ports for the tests
# and benchmarks (no replicas: the contract suite needs the slot routing,
# not failover).
#
#   .ci/redis-cluster.sh start DIR [BASE_PORT]   # nodes on BASE_PORT..BASE_PORT+2 (default 7000)
#   .ci/redis-cluster.sh stop DIR
#
# start prints the addresses (host:port,host:port,host:port) on its last
# line, for REDIS_CLUSTER_ADDRS. Each node keeps its pid, log and
# nodes.conf under DIR/<port>; stop kills those pids only.
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
base="${3:-7000}"
if [[ -z "$cmd" || -z "$dir" ]]; then
  echo "usage: $0 start|stop DIR [BASE_PORT]" >&2
  exit 2
fi
ports=("$base" "$((base + 1))" "$((base + 2))")

stop() {
  for p in "${ports[@]}"; do
    pidfile="$dir/$p/redis.pid"
    if [[ -f "$pidfile" ]]; then
      pid="$(cat "$pidfile")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -f "$pidfile"
    fi
  done
}

case "$cmd" in
stop)
  stop
  ;;
start)
  addrs=()
  for p in "${ports[@]}"; do
    if redis-cli -h 127.0.0.1 -p "$p" ping >/dev/null 2>&1; then
      echo "redis-cluster: port $p is already in use (stop it, or pick another BASE_PORT)" >&2
      exit 1
    fi
    mkdir -p "$dir/$p"
    rm -f "$dir/$p/nodes.conf"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$p" \
      --cluster-enabled yes --cluster-config-file "$dir/$p/nodes.conf" --cluster-node-timeout 5000 \
      --save "" --appendonly no --dir "$dir/$p" --pidfile "$dir/$p/redis.pid" --logfile "$dir/$p/redis.log"
    addrs+=("127.0.0.1:$p")
  done
  for p in "${ports[@]}"; do
    for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 || {
    cat "$dir/create.log" >&2
    stop
    exit 1
  }
  # Wait until every node agrees the cluster is up (all slots served).
  for p in "${ports[@]}"; do
    ok=""
    for _ in $(seq 1 100); do
      if redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; then ok=1; break; fi
      sleep 0.1
    done
    if [[ -z "$ok" ]]; then
      echo "redis-cluster: node $p did not reach cluster_state:ok" >&2
      stop
      exit 1
    fi
  done
  (IFS=,; echo "${addrs[*]}")
  ;;
*)
  echo "usage: $0 start|stop DIR [BASE_PORT]" >&2
  exit 2
  ;;
esac
