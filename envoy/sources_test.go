package envoy

import (
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// withSources gives every IR node of cfg a source and returns the source
// each resource built from it must carry, by type URL and name. A secret's
// CA is expected only when caServed says a listener verifies clients with it.
func withSources(cfg *ir.Config, caServed map[string]bool) map[resource.Type]map[string]string {
	want := map[resource.Type]map[string]string{}
	set := func(typ resource.Type, name, source string) {
		if want[typ] == nil {
			want[typ] = map[string]string{}
		}
		want[typ][name] = source
	}
	for i := range cfg.Listeners {
		l := &cfg.Listeners[i]
		l.Source = "edge.yaml:listener-" + l.Name
		set(resource.ListenerType, ListenerName(l.Name), l.Source)
		set(resource.RouteType, RouteConfigName(l.Name), l.Source)
	}
	for i := range cfg.Clusters {
		c := &cfg.Clusters[i]
		c.Source = "edge.yaml:route-to-" + c.Service
		set(resource.ClusterType, ClusterName(c.Service), c.Source)
		if !c.DNS {
			set(resource.EndpointType, ClusterName(c.Service), c.Source)
		}
	}
	for i := range cfg.Secrets {
		s := &cfg.Secrets[i]
		s.Source = "certs.yaml:" + s.Name
		set(resource.SecretType, SecretName(s.Name), s.Source)
		if caServed[s.Name] {
			set(resource.SecretType, CASecretName(s.Name), s.Source)
		}
	}
	return want
}

// checkSources compares the Builder's sources with want, and checks that
// every resource it built has exactly one: a NACK of any of them can name
// a policy line, and no source is recorded for a resource never sent.
func checkSources(t *testing.T, b *Builder, res Resources, want map[resource.Type]map[string]string) {
	t.Helper()
	got := b.Sources()
	n := 0
	for _, typ := range Types {
		for _, r := range res[typ] {
			name := GetName(r)
			if src, ok := got[typ][name]; !ok || src != want[typ][name] {
				t.Errorf("%s %q: source %q (found %v); want %q", shortType(typ), name, src, ok, want[typ][name])
			}
			n++
		}
		if len(got[typ]) != len(res[typ]) {
			t.Errorf("%d sources for %d %s resources: %v", len(got[typ]), len(res[typ]), shortType(typ), got[typ])
		}
		if len(want[typ]) != len(res[typ]) {
			t.Errorf("built %d %s resources; the fixture expects %d: %v", len(res[typ]), shortType(typ), len(want[typ]), want[typ])
		}
	}
	if n < 5 {
		t.Fatalf("the fixture built only %d resources; it should exercise every type", n)
	}
}

// Every resource Build makes has a source, and it is the one of the IR node
// it was built from, recorded as it is built: the CA secret a listener
// verifies clients with too.
func TestSourcesCoverEveryResource(t *testing.T) {
	cfg := loadIR(t, "testdata/edge.in.yaml")
	want := withSources(cfg, map[string]bool{"admin-cert": true})
	if want[resource.SecretType][CASecretName("admin-cert")] == "" {
		t.Fatal("the fixture lost its client CA: want admin-cert's CA verifying a listener's clients")
	}
	var b Builder
	res, _, err := b.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkSources(t, &b, res, want)

	// Built again from memory, the sources are the same.
	res, _, err = b.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkSources(t, &b, res, want)
}

// A certificate with a CA that no listener verifies clients with makes no
// CA secret, and so has no source for one; once a listener uses it, both
// the CA secret and its source appear.
func TestSourcesFollowTheCASecretsBuilt(t *testing.T) {
	cfg := loadIR(t, "testdata/edge.in.yaml")
	for i := range cfg.Listeners {
		if cfg.Listeners[i].TLS != nil {
			cfg.Listeners[i].TLS.ClientCA = ""
		}
	}
	want := withSources(cfg, nil)
	var b Builder
	res, _, err := b.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkSources(t, &b, res, want)
	if src, ok := b.Sources()[resource.SecretType][CASecretName("admin-cert")]; ok {
		t.Errorf("a source %q for a CA secret that was not built", src)
	}

	cfg = loadIR(t, "testdata/edge.in.yaml")
	want = withSources(cfg, map[string]bool{"admin-cert": true})
	res, _, err = b.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkSources(t, &b, res, want)
}

// A Build that fails leaves the sources of the last good one.
func TestSourcesKeptOnFailedBuild(t *testing.T) {
	cfg := loadIR(t, "testdata/edge.in.yaml")
	want := withSources(cfg, map[string]bool{"admin-cert": true})
	var b Builder
	res, _, err := b.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	bad := *cfg
	bad.Listeners = append([]ir.Listener(nil), cfg.Listeners...)
	bad.Listeners = append(bad.Listeners, bad.Listeners[0]) // a listener name used twice
	if _, _, err := b.Build(&bad); err == nil {
		t.Fatal("a build with a listener twice succeeded; the test needs a failing build")
	}
	checkSources(t, &b, res, want)
}
