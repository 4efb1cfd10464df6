package translator

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/switchyard-io/switchyard/policy"
)

func TestServices(t *testing.T) {
	set, diags := policy.Load(filepath.Join("testdata", "basic", "policy"))
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	got := Services(set)
	want := []string{"api", "search", "web", "web-v2"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v; want %v (every routed service, splits included, once, sorted)", got, want)
	}
}

// A listener's authorization service and the key servers of its JWT
// providers are watched like routed services; one given by address is not.
func TestServicesOfAuth(t *testing.T) {
	set, diags := policy.Load(filepath.Join("testdata", "auth", "policy"))
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	got := Services(set)
	want := []string{"authz", "keys", "web"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v; want %v", got, want)
	}
}

// TestServicesRateLimitService watches a rate limit service found in
// Consul, and not one given by address.
func TestServicesRateLimitService(t *testing.T) {
	set, diags := policy.Load(filepath.Join("testdata", "globalratelimit", "policy"))
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	got := Services(set)
	want := []string{"api", "ratelimit", "ratelimit-internal", "web", "web-canary"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v; want %v (the routed services and the Consul rate limit services)", got, want)
	}
}
