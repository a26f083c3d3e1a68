#!/usr/bin/env bash
# Three `wsbus serve` nodes over one Redis, behind an nginx that round-robins every request
# across them (no stickiness): the npm faye and cometd clients run the full scenario of
# tests/bus/clients.test.mjs through it, over WebSocket, over long-polling (WebSocket
# disabled in the client) and negotiated. A client's long-polling requests land on all three
# nodes in turn, and Faye's WebSocket usually on another node than its HTTP handshake: every
# request for a client reaches the node that owns its session (forwarded through Redis), and
# messages cross between the nodes of publishers and subscribers. Afterwards the nginx access
# log must show every node serving long-polling requests and WebSocket upgrades.
#
#   tests/cluster/run.sh
#
# Uses $WSBUS_BIN (default target/release/wsbus; builds nothing), redis-server (REDIS_SERVER,
# default on PATH) on a free port from a temporary directory with persistence off (never the
# machine's 6379), and nginx (NGINX_BIN, default /usr/sbin/nginx) with its configuration,
# logs, pid and temp files in that directory; all stopped by PID on exit. npm deps: those of
# tests/bus (its run.sh installs them). WSBUS_CLUSTER_KEEP=1 keeps the temporary directory.
# Exits non-zero if anything fails.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${WSBUS_BIN:-$here/../../target/release/wsbus}"
redis_bin="${REDIS_SERVER:-redis-server}"
nginx_bin="${NGINX_BIN:-/usr/sbin/nginx}"
[[ -x $bin ]] || { echo "error: no wsbus binary at $bin (cargo build --release)" >&2; exit 1; }
command -v "$redis_bin" >/dev/null || { echo "error: no redis-server ($redis_bin); apt-get install redis-server" >&2; exit 1; }
[[ -x $nginx_bin ]] || { echo "error: no nginx at $nginx_bin; apt-get install nginx or set NGINX_BIN" >&2; exit 1; }

# How long a node may take to start and find Redis, in tenths of a second.
START_TENTHS=300

work="$(mktemp -d "${TMPDIR:-/tmp}/wsbus-cluster-XXXXXX")"
# nginx started as root makes its temp directories owned by `nobody`: let it reach them.
chmod 0711 "$work"
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ $status -ne 0 ]]; then
    for log in "$work"/node-*.log "$work"/error.log; do
      [[ -f $log ]] && { echo "---- tail of $log" >&2; tail -n 30 "$log" >&2; }
    done
  fi
  if [[ -n ${WSBUS_CLUSTER_KEEP:-} ]]; then
    echo "kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# free_port: a TCP port free on 127.0.0.1 now.
free_port() {
  node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}

# --- Redis
redis_port=$(free_port)
(cd "$work" && exec "$redis_bin" --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work" --logfile "$work/redis.log") &
pids+=($!)
for _ in $(seq $START_TENTHS); do
  (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break
  sleep 0.1
done
echo "==== redis-server on 127.0.0.1:$redis_port"

# --- three nodes
node_addrs=()
for id in 1 2 3; do
  log="$work/node-$id.log"
  WSBUS_CLUSTER__REDIS_URL="redis://127.0.0.1:$redis_port" WSBUS_CLUSTER__NODE_ID="$id" \
    WSBUS_LOG="wsbus::cluster=debug,info" "$bin" serve --listen 127.0.0.1:0 2>"$log" &
  pids+=($!)
  addr=
  for _ in $(seq $START_TENTHS); do
    addr=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$log" | head -n 1)
    [[ -n $addr ]] && break
    sleep 0.1
  done
  [[ -n $addr ]] || { echo "error: node $id did not start" >&2; exit 1; }
  node_addrs+=("$addr")
done
for addr in "${node_addrs[@]}"; do
  up=
  for _ in $(seq $START_TENTHS); do
    if curl -fsS "http://$addr/readyz" 2>/dev/null | grep -q '"redis":"up"'; then up=1; break; fi
    sleep 0.1
  done
  [[ -n $up ]] || { echo "error: node at $addr did not reach Redis" >&2; exit 1; }
done
echo "==== nodes ${node_addrs[*]}, each up on Redis"

# --- nginx: one upstream of the three nodes, round-robin (nginx's default), no stickiness,
# no upstream keepalive; WebSocket upgrades passed on.
nginx_port=$(free_port)
{
  cat <<CONF
# Written by tests/cluster/run.sh. One process, no master/worker split: it runs as whoever
# starts it, and stopping its PID stops everything.
master_process off;
error_log $work/error.log info;
events { worker_connections 512; }
http {
    log_format upstream '\$request_method \$uri \$status upstream=\$upstream_addr upgrade=\$http_upgrade';
    access_log $work/access.log upstream;
    client_body_temp_path $work/client_body_temp;
    proxy_temp_path $work/proxy_temp;
    fastcgi_temp_path $work/fastcgi_temp;
    uwsgi_temp_path $work/uwsgi_temp;
    scgi_temp_path $work/scgi_temp;
    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        ''      close;
    }
    upstream wsbus {
CONF
  for addr in "${node_addrs[@]}"; do echo "        server $addr;"; done
  cat <<CONF
    }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://wsbus;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$http_host;
            # Longer than a held /meta/connect (30 s) and its forwarding margin.
            proxy_read_timeout 120s;
            # A node that does not answer is a failure to see, not to hide by retrying
            # elsewhere (a retried publish would be published twice).
            proxy_next_upstream off;
        }
    }
}
CONF
} >"$work/nginx.conf"
env -u NGINX "$nginx_bin" -p "$work" -c "$work/nginx.conf" -g "daemon off; pid $work/nginx.pid;" &
pids+=($!)
for _ in $(seq $START_TENTHS); do
  curl -fsS "http://127.0.0.1:$nginx_port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
url="http://127.0.0.1:$nginx_port/amb"
echo "==== nginx round-robin on 127.0.0.1:$nginx_port"

# --- the scenario, with tests/bus's clients and harness
"$here/../bus/run.sh" "$url"

# --- every node served both transports
status=0
for addr in "${node_addrs[@]}"; do
  posts=$(grep -c "^POST /amb.* 200 upstream=$addr " "$work/access.log" || true)
  upgrades=$(grep -c "^GET /amb 101 upstream=$addr " "$work/access.log" || true)
  echo "node $addr: $posts long-polling requests, $upgrades WebSocket upgrades"
  if [[ $posts -eq 0 || $upgrades -eq 0 ]]; then
    echo "error: node $addr did not serve both transports: the balancer did not spread the clients" >&2
    status=1
  fi
done
exit $status
