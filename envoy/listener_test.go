package envoy

import (
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// The local rate limit runs before JWT validation and external
// authorization, so a flood over it costs no authorization call; the
// global rate limit after them, so it can count authenticated values; the
// clients' copies of the checks' headers are removed just before the checks.
func TestHTTPFilterOrder(t *testing.T) {
	l := authListener()
	l.RateLimitService = &ir.RateLimitService{Cluster: ir.RateLimitCluster, Domain: "edge", Timeout: ir.D(time.Second)}
	lis, err := listener(l)
	if err != nil {
		t.Fatal(err)
	}
	var hcm hcmv3.HttpConnectionManager
	if err := lis.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range hcm.GetHttpFilters() {
		got = append(got, f.GetName())
	}
	want := []string{httpRBACFilterName, corsFilterName, localRateLimitFilterName, headerMutationFilterName, jwtAuthnFilterName, extAuthzFilterName,
		rateLimitFilterName, bufferFilterName, faultFilterName, routerFilterName}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("HTTP filters (-want +got):\n%s", diff)
	}
}
