#!/usr/bin/env bash
# demo.sh runs the quick start on this machine: a Consul dev agent, three
# sample services with real HTTP health checks, Switchyard serving the
# examples/quickstart policies, and an Envoy edge proxy on 127.0.0.1:10000;
# a small mesh: shop calls orders through two Connect sidecars; and the
# rate limit service (envoyproxy/ratelimit, counting in Redis) that the
# edge's global limits use, configured by Switchyard over xDS.
# It runs until Ctrl-C, then stops everything it started.
#
#   DEMO_CHECK=1 hack/demo.sh   starts everything, checks the printed curl
#                               commands work, and exits (used by make test)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}
consul="$cache/bin/consul"
envoy="$cache/bin/envoy"
ratelimit="$cache/bin/ratelimit"
redis="$cache/bin/redis-server"
switchyard="$root/bin/switchyard"
state=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-demo.XXXXXX")

CONSUL_HTTP=127.0.0.1:18500
XDS=127.0.0.1:18000
ADMIN=127.0.0.1:19100
ENVOY_ADMIN=127.0.0.1:19901
ENVOY_PROMETHEUS=127.0.0.1:19102 # the edge Envoy's stats for Prometheus
EDGE=127.0.0.1:10000
EDGE_REDIRECT=127.0.0.1:10080 # the edge's listener that redirects to HTTPS
SHOP_UPSTREAM=127.0.0.1:19191 # shop's sidecar: its way to orders
REDIS=127.0.0.1:16379          # the rate limit service's counters
RATELIMIT_GRPC=127.0.0.1:18091 # where Envoy asks about global limits
RATELIMIT_DEBUG=127.0.0.1:18093 # its /rlconfig: the limits Switchyard gave it

for bin in "$consul" "$envoy" "$ratelimit" "$redis" "$switchyard"; do
  [ -x "$bin" ] || { echo "demo: $bin is missing: run 'make tools build' (make demo does both)" >&2; exit 1; }
done
for addr in $CONSUL_HTTP $XDS $ADMIN $ENVOY_ADMIN $ENVOY_PROMETHEUS $EDGE $EDGE_REDIRECT 127.0.0.1:18081 127.0.0.1:18082 127.0.0.1:18083 127.0.0.1:18084 \
  127.0.0.1:18085 127.0.0.1:18087 127.0.0.1:21000 127.0.0.1:21001 $SHOP_UPSTREAM 127.0.0.1:19902 127.0.0.1:19903 \
  $REDIS $RATELIMIT_GRPC 127.0.0.1:18092 $RATELIMIT_DEBUG; do
  # (shop-1's own port, 18086, is registered but nothing listens there: in
  # the demo, curl plays shop's app.)
  if (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null; then
    echo "demo: $addr is already in use; stop whatever listens there (an earlier demo?) and retry" >&2
    exit 1
  fi
done

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "demo: stopping everything it started"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${DEMO_KEEP:-}" ] || rm -rf "$state"
}
trap cleanup EXIT
trap 'cleanup; exit 0' INT TERM

start() { # name, command...: logs to $state/NAME.log, pid in $state/NAME.pid
  local name=$1; shift
  "$@" >"$state/$name.log" 2>&1 &
  pids+=($!)
  echo $! >"$state/$name.pid"
}

wait_http() { # url, what
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "demo: $2 did not come up; its log:" >&2
  tail -n 30 "$state/$3.log" >&2
  exit 1
}

echo "demo: starting Consul (dev agent, in memory) on $CONSUL_HTTP"
start consul "$consul" agent -dev -client 127.0.0.1 -bind 127.0.0.1 -node demo \
  -http-port 18500 -grpc-port 18502 -dns-port 18600 -serf-lan-port 18301 \
  -serf-wan-port 18302 -server-port 18300 -grpc-tls-port 18503 -log-level warn
for _ in $(seq 1 300); do
  leader=$(curl -fsS "http://$CONSUL_HTTP/v1/status/leader" 2>/dev/null || true)
  [ -n "$leader" ] && [ "$leader" != '""' ] && break
  sleep 0.1
done

echo "demo: building and starting the sample services"
(cd "$root" && go build -o "$state/backend" ./examples/quickstart/backend)
register() { # id, service, port, version
  start "$1" "$state/backend" -name "$1" -addr "127.0.0.1:$3"
  curl -fsS -X PUT "http://$CONSUL_HTTP/v1/agent/service/register" -d @- <<JSON
{"ID": "$1", "Name": "$2", "Address": "127.0.0.1", "Port": $3, "Tags": ["$4"],
 "Meta": {"version": "$4"},
 "Check": {"HTTP": "http://127.0.0.1:$3/health", "Interval": "1s", "Timeout": "500ms"}}
JSON
}
register web-1 web 18081 v1
register web-2 web 18082 v2 # tagged v2: the /tagged canary
register web-v2-1 web-v2 18083 v2
register api-1 api 18084 v1
register api-2 api 18087 v1

# The mesh: orders (an app) and shop (its caller) with Connect sidecars, as
# Consul documents them; shop reaches orders on its sidecar's local port.
start orders-1 "$state/backend" -name orders-1 -addr 127.0.0.1:18085
mesh_register() { # id, service, port, sidecar port, upstreams JSON
  curl -fsS -X PUT "http://$CONSUL_HTTP/v1/agent/service/register" -d @- <<JSON
{"ID": "$1", "Name": "$2", "Address": "127.0.0.1", "Port": $3,
 "Connect": {"SidecarService": {"Port": $4,
   "Checks": [{"Name": "sidecar", "TTL": "1h", "Status": "passing"}],
   "Proxy": {"Config": {"protocol": "http"}, "Upstreams": $5}}}}
JSON
}
mesh_register orders-1 orders 18085 21001 '[]'
mesh_register shop-1 shop 18086 21000 '[{"DestinationName": "orders", "LocalBindPort": 19191}]'

# A new HTTP check starts critical until its first run: wait for every
# instance to pass, so the first requests find them all in rotation.
for _ in $(seq 1 100); do
  [ "$(curl -fsS "http://$CONSUL_HTTP/v1/health/state/critical")" = "[]" ] && break
  sleep 0.1
done

echo "demo: starting Switchyard with $state/policies"
cp -r "$root/examples/quickstart/policies" "$state/policies"
start switchyard "$switchyard" serve --mesh --consul-address "$CONSUL_HTTP" --policy "$state/policies" \
  --xds-address "$XDS" --admin-address "$ADMIN"
wait_http "http://$ADMIN/readyz" "Switchyard" switchyard

echo "demo: starting Redis on $REDIS and the rate limit service on $RATELIMIT_GRPC (its limits come from Switchyard)"
start redis "$redis" --bind 127.0.0.1 --port "${REDIS#*:}" --save "" --appendonly no
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/${REDIS%:*}/${REDIS#*:}") 2>/dev/null && break
  sleep 0.1
done
# envoyproxy/ratelimit takes its configuration from Switchyard over xDS
# (state of the world, no node.cluster) and opens its ports once it has it.
start ratelimit env HOST=127.0.0.1 PORT=18092 GRPC_HOST=127.0.0.1 GRPC_PORT="${RATELIMIT_GRPC#*:}" \
  DEBUG_HOST=127.0.0.1 DEBUG_PORT="${RATELIMIT_DEBUG#*:}" USE_STATSD=false LOG_LEVEL=warn \
  BACKEND_TYPE=redis REDIS_SOCKET_TYPE=tcp REDIS_TYPE=SINGLE REDIS_URL="$REDIS" \
  CONFIG_TYPE=GRPC_XDS_SOTW CONFIG_GRPC_XDS_SERVER_URL="$XDS" CONFIG_GRPC_XDS_NODE_ID=ratelimit-1 \
  XDS_CLIENT_BACKOFF_INITIAL_INTERVAL=1s "$ratelimit"
wait_http "http://127.0.0.1:18092/healthcheck" "the rate limit service" ratelimit
# The edge finds it in Consul (rateLimitService: {service: ratelimit}).
curl -fsS -X PUT "http://$CONSUL_HTTP/v1/agent/service/register" -d @- <<JSON
{"ID": "ratelimit-1", "Name": "ratelimit", "Address": "127.0.0.1", "Port": ${RATELIMIT_GRPC#*:},
 "Check": {"GRPC": "$RATELIMIT_GRPC", "Interval": "1s", "Timeout": "500ms"}}
JSON
for _ in $(seq 1 100); do
  [ "$(curl -fsS "http://$CONSUL_HTTP/v1/health/state/critical")" = "[]" ] && break
  sleep 0.1
done

echo "demo: starting Envoy (group edge) on $EDGE"
"$switchyard" bootstrap --node-id edge-1 --group edge --xds-address "$XDS" --admin-address "$ENVOY_ADMIN" \
  --prometheus-address "$ENVOY_PROMETHEUS" >"$state/envoy.yaml"
start envoy "$envoy" -c "$state/envoy.yaml" --use-dynamic-base-id --log-level warn
wait_http "http://$EDGE/" "Envoy" envoy

echo "demo: starting the sidecars of orders-1 and shop-1 (switchyard bootstrap --sidecar-for)"
"$switchyard" bootstrap --sidecar-for orders-1 --xds-address "$XDS" --admin-address 127.0.0.1:19902 >"$state/orders-sidecar.yaml"
"$switchyard" bootstrap --sidecar-for shop-1 --xds-address "$XDS" --admin-address 127.0.0.1:19903 >"$state/shop-sidecar.yaml"
start orders-sidecar "$envoy" -c "$state/orders-sidecar.yaml" --use-dynamic-base-id --log-level warn
start shop-sidecar "$envoy" -c "$state/shop-sidecar.yaml" --use-dynamic-base-id --log-level warn
wait_http "http://$SHOP_UPSTREAM/" "the mesh (shop -> orders)" shop-sidecar

if [ -n "${DEMO_CHECK:-}" ]; then
  fail() { echo "demo check: $*" >&2; exit 1; }
  expect() { # description, regex, curl args...: retry for 5 s until the whole answer matches
    local what=$1 re=$2 out=""; shift 2
    for _ in $(seq 1 50); do
      out=$(curl -sS "$@" 2>&1 || true)
      [[ $out =~ ^($re)$ ]] && return 0
      sleep 0.1
    done
    fail "$what: got '$out'"
  }
  expect "GET / reaches a web instance" 'web-1 /|web-2 /|web-v2-1 /' "http://$EDGE/"
  expect "GET /api/orders reaches api" 'api-[12] /api/orders' "http://$EDGE/api/orders"
  # Sticky sessions on api: with the cookie Envoy sets, 10 requests reach
  # one instance.
  jar="$state/cookies"
  curl -sS -c "$jar" -o /dev/null "http://$EDGE/api/orders"
  sticky=$(for _ in $(seq 1 10); do curl -sS -b "$jar" "http://$EDGE/api/orders"; done | sort -u | wc -l)
  [ "$sticky" = 1 ] || fail "10 requests with the sy-session cookie reached $sticky api instances; want 1"
  grep -q sy-session "$jar" || fail "Envoy set no sy-session cookie"
  # The tag canary: /tagged reaches web-2 (tagged v2) and web-1, no other.
  seen=$(for _ in $(seq 1 40); do curl -sS "http://$EDGE/tagged"; done | sort -u | tr '\n' ' ')
  [ "$seen" = "web-1 /tagged web-2 /tagged " ] || fail "/tagged reached: $seen; want web-1 and web-2 (the v2 tag canary)"
  expect "the canary header reaches web-v2" 'web-v2-1 /' -H 'x-canary: 1' "http://$EDGE/"
  expect "/store/cart reaches web as /cart" 'web-1 /cart|web-2 /cart' "http://$EDGE/store/cart"
  # The global limit on /quota: 3 requests per API key per hour, whichever
  # Envoy they reach. A fresh key each try (a try that spans the top of the
  # hour, or runs before Envoy has the service's endpoint, is retried).
  quota=""
  for i in $(seq 1 50); do
    quota=$(for _ in 1 2 3 4 5; do curl -sS -o /dev/null -w '%{http_code} ' -H "x-api-key: demo-$i-$$" "http://$EDGE/quota"; done)
    [ "$quota" = "200 200 200 429 429 " ] && break
    sleep 0.2
  done
  [ "$quota" = "200 200 200 429 429 " ] || fail "5 requests to /quota with one API key got $quota; want 3 passed, then 429 (global limit)"
  expect "another API key has its own quota" '200' -o /dev/null -w '%{http_code}' -H "x-api-key: other-$$" "http://$EDGE/quota"
  expect "plain HTTP on $EDGE_REDIRECT redirects to HTTPS" '301 https://shop.example.com/cart\?item=3' \
    -o /dev/null -w '%{http_code} %{redirect_url}' -H 'Host: shop.example.com' "http://$EDGE_REDIRECT/cart?item=3"
  curl -fsS -X POST http://127.0.0.1:18081/admin/fail >/dev/null
  n=1
  for _ in $(seq 1 100); do
    n=$(for _ in $(seq 1 20); do curl -sS "http://$EDGE/"; done | grep -c '^web-1 ' || true)
    [ "$n" = 0 ] && break
    sleep 0.1
  done
  [ "$n" = 0 ] || fail "web-1 still gets requests after its health check failed"
  curl -fsS -X POST http://127.0.0.1:18081/admin/recover >/dev/null
  for _ in $(seq 1 100); do
    n=$(for _ in $(seq 1 20); do curl -sS "http://$EDGE/"; done | grep -c '^web-1 ' || true)
    [ "$n" != 0 ] && break
    sleep 0.1
  done
  [ "$n" != 0 ] || fail "web-1 did not come back after its health check recovered"
  # web-2 dies behind Consul's back: no request may fail meanwhile.
  kill "$(cat "$state/web-2.pid")"
  for i in $(seq 1 40); do
    code=$(curl -sS -o /dev/null -w '%{http_code}' "http://$EDGE/")
    [ "$code" = 200 ] || fail "request $i after web-2 died got $code; want 200 (retried on another instance)"
  done
  expect "shop reaches orders through the mesh" 'orders-1 /hello' "http://$SHOP_UPSTREAM/hello"
  curl -fsS -X PUT "http://$CONSUL_HTTP/v1/config" -d '{"Kind": "service-intentions", "Name": "orders", "Sources": [{"Name": "shop", "Action": "deny"}]}' >/dev/null
  expect "the intention shop -> orders: deny gives 403" '403' -o /dev/null -w '%{http_code}' "http://$SHOP_UPSTREAM/hello"
  curl -fsS -X DELETE "http://$CONSUL_HTTP/v1/config/service-intentions/orders" >/dev/null
  expect "the deny removed: 200 again" 'orders-1 /hello' "http://$SHOP_UPSTREAM/hello"
  # Envoy writes its access log out every 10 s (--file-flush-interval-msec).
  for _ in $(seq 1 150); do
    grep -q '"path":"/api/orders"' "$state/envoy.log" && break
    sleep 0.1
  done
  grep -q '"path":"/api/orders"' "$state/envoy.log" || fail "no JSON access log line for /api/orders in $state/envoy.log"
  stats=$(curl -fsS "http://$ENVOY_PROMETHEUS/metrics")
  grep -q '^envoy_cluster_upstream_rq_total{envoy_cluster_name="api"}' <<<"$stats" ||
    fail "no api requests in the edge Envoy's Prometheus stats at http://$ENVOY_PROMETHEUS/metrics"
  echo "demo check: ok (routing, canary header, api, sticky session, tag canary, prefix rewrite, global rate limit, HTTPS redirect, failed health check, crashed instance, mesh, intention, access log, Envoy's stats)"
  exit 0
fi

cat <<EOT

Switchyard is running. Try:

  curl http://$EDGE/                      # web: 90% web (web-1, web-2), 10% web-v2
  curl http://$EDGE/api/orders            # api, with a 2s timeout and retries
  curl -H 'x-canary: 1' http://$EDGE/     # always web-v2
  for i in \$(seq 10); do curl -s http://$EDGE/tagged; done
                                          # a canary by Consul tag: web-2 (tagged v2) or web-1
  curl -c /tmp/jar -b /tmp/jar http://$EDGE/api/orders
                                          # sticky: with the cookie, always the same api instance
  curl http://$EDGE/store/cart            # web sees /cart: the /store prefix is stripped (rewrite)
  curl -si -H 'Host: shop.example.com' http://$EDGE_REDIRECT/cart | head -3
                                          # 301 to https://shop.example.com/cart (httpsRedirect)
  for i in \$(seq 50); do curl -s -o /dev/null -w '%{http_code} ' http://$EDGE/api; done; echo
                                          # rate limit: 20/s, burst 40, then 429
  for i in \$(seq 5); do curl -s -o /dev/null -w '%{http_code} ' -H 'x-api-key: alice' http://$EDGE/quota; done; echo
                                          # global limit (every Envoy of the group, counted by
                                          # the rate limit service in Redis): 3 per key per hour
  curl http://$RATELIMIT_DEBUG/rlconfig   # the limits Switchyard gave the rate limit service

Fail a health check and watch web-1 leave the rotation within a second:
  curl -X POST http://127.0.0.1:18081/admin/fail
  curl -X POST http://127.0.0.1:18081/admin/recover

Kill an instance: no request fails (Envoy retries elsewhere, ejects it, and
Consul's check catches up a second later):
  kill \$(cat $state/web-2.pid)
  curl -s http://$ENVOY_ADMIN/stats | grep web.outlier_detection.ejections_active

The mesh: shop calls orders through two sidecars, over mutual TLS with
Consul's CA; orders' sidecar allows or denies it by Consul's intentions:
  curl http://$SHOP_UPSTREAM/hello                 # orders-1, through both sidecars
  curl -X PUT http://$CONSUL_HTTP/v1/config -d '{"Kind":"service-intentions","Name":"orders","Sources":[{"Name":"shop","Action":"deny"}]}'
  curl -i http://$SHOP_UPSTREAM/hello              # 403 now
  curl -X DELETE http://$CONSUL_HTTP/v1/config/service-intentions/orders

See the Envoy config a policy produces, without running anything:
  $switchyard translate $state/policies

Edit a policy and save it: the change is live at once, no restart.
  \$EDITOR $state/policies/edge.yaml
A mistake (try a typo in a field name) is logged with file and line, and the
last good policy keeps serving: $state/switchyard.log

Look inside:
  tail -f $state/envoy.log                      # the edge's access log: a JSON line per request
  tail -f $state/orders-sidecar.log             # a sidecar's: who called (client_spiffe_id), what answered
  curl http://$ADMIN/debug/config?group=edge   # what Envoy is served
  curl http://$ADMIN/metrics                   # Switchyard's metrics (scrape it)
  curl http://$ENVOY_PROMETHEUS/metrics        # the edge Envoy's stats for Prometheus (scrape it)
  curl http://$ENVOY_ADMIN/clusters            # Envoy's view of the endpoints
  Consul UI: http://$CONSUL_HTTP/ui
  Logs: $state/*.log

Ctrl-C stops everything.
EOT
wait
