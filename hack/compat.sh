#!/usr/bin/env bash
# compat.sh runs a short end-to-end smoke test against every Envoy release
# the project supports besides the main one (hack/tools.sh
# ENVOY_COMPAT_VERSIONS, installed by `hack/tools.sh --compat`): routing
# to every instance, a weighted split, TLS certificates chosen by SNI, a
# health flip, a NACK traced to its policy line, and the mesh (sidecars with
# mutual TLS). The main release runs the whole suite in `make test`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash hack/tools.sh --compat >/dev/null
# shellcheck disable=SC1090
versions=$(sed -n 's/^ENVOY_COMPAT_VERSIONS="\(.*\)"$/\1/p' hack/tools.sh)
smoke='^(TestRequestsReachEveryInstance|TestWeightedSplit|TestTLSCertificatesBySNIAndRotation|TestCriticalInstanceLeavesRotation|TestEnvoyNACKIsLoggedAndCounted|TestMeshWebCallsAPIThroughSidecars)$'
for v in $versions; do
  bin="envoy-$(echo "$v" | cut -d. -f1,2)"
  echo "compat: Envoy $v"
  SWITCHYARD_TEST_ENVOY=$bin ${GO:-go} test -count=1 -timeout 10m -run "$smoke" ./test/e2e/
done
