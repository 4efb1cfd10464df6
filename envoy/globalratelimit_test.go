package envoy

import (
	"encoding/json"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// loadGlobalRateLimitCase reads the golden IR with global limits.
func loadGlobalRateLimitCase(t *testing.T) *ir.Config {
	t.Helper()
	return loadIR(t, "testdata/globalratelimit.in.yaml")
}

// request is what Envoy's rate limit actions read of a request.
type request struct {
	clientIP string
	path     string
	cluster  string // the cluster the route picked
	headers  map[string]string
}

// envoyDescriptors computes, as Envoy's rate limit filter does, the
// descriptors a request sends for a list of rate_limits: each action adds
// an entry; a request_headers action on a missing header drops the whole
// descriptor, or with skip_if_absent only its entry.
func envoyDescriptors(t *testing.T, limits []*routev3.RateLimit, req request) [][][2]string {
	t.Helper()
	var out [][][2]string
	for _, rl := range limits {
		var entries [][2]string
		dropped := false
		for _, a := range rl.GetActions() {
			switch {
			case a.GetGenericKey() != nil:
				key := a.GetGenericKey().GetDescriptorKey()
				if key == "" {
					key = "generic_key"
				}
				entries = append(entries, [2]string{key, a.GetGenericKey().GetDescriptorValue()})
			case a.GetRemoteAddress() != nil:
				entries = append(entries, [2]string{"remote_address", req.clientIP})
			case a.GetDestinationCluster() != nil:
				entries = append(entries, [2]string{"destination_cluster", req.cluster})
			case a.GetRequestHeaders() != nil:
				h := a.GetRequestHeaders()
				v := req.headers[h.GetHeaderName()]
				if h.GetHeaderName() == ":path" {
					v = req.path
				}
				switch {
				case v != "":
					entries = append(entries, [2]string{h.GetDescriptorKey(), v})
				case !h.GetSkipIfAbsent():
					dropped = true
				}
			default:
				t.Fatalf("action %v: not understood by this test", a)
			}
		}
		if !dropped {
			out = append(out, entries)
		}
	}
	return out
}

// serviceLimit finds the limit the rate limit service applies to a
// descriptor, as envoyproxy/ratelimit's GetLimit does
// (src/config/config_impl.go): at each level the entry's key_value, else
// its key alone (any value, a counter per value); the limit counts only
// at the depth of the descriptor's last entry.
func serviceLimit(c *rlsconfv3.RateLimitConfig, desc [][2]string) *rlsconfv3.RateLimitDescriptor {
	level := c.GetDescriptors()
	for i, e := range desc {
		var next *rlsconfv3.RateLimitDescriptor
		for _, d := range level {
			if d.GetValue() != "" && d.GetKey()+"_"+d.GetValue() == e[0]+"_"+e[1] {
				next = d
			}
		}
		if next == nil {
			for _, d := range level {
				if d.GetValue() == "" && d.GetKey() == e[0] {
					next = d
				}
			}
		}
		if next == nil {
			return nil
		}
		if i == len(desc)-1 {
			if next.GetRateLimit() == nil {
				return nil
			}
			return next
		}
		level = next.GetDescriptors()
	}
	return nil
}

// checkLoadable applies the checks envoyproxy/ratelimit makes when it
// loads a configuration: a domain, keys, no composite key twice on a
// level, a known unit on every limit.
func checkLoadable(t *testing.T, c *rlsconfv3.RateLimitConfig) {
	t.Helper()
	if c.GetDomain() == "" {
		t.Errorf("config %q: empty domain", c.GetName())
	}
	var walk func(path string, level []*rlsconfv3.RateLimitDescriptor)
	walk = func(path string, level []*rlsconfv3.RateLimitDescriptor) {
		seen := map[string]bool{}
		for _, d := range level {
			key := d.GetKey()
			if d.GetValue() != "" {
				key += "_" + d.GetValue()
			}
			if d.GetKey() == "" || seen[key] || strings.HasSuffix(key, "*") {
				t.Errorf("%s: descriptor %q empty, twice or a prefix pattern", path, key)
			}
			seen[key] = true
			if rl := d.GetRateLimit(); rl != nil && (rl.GetUnit() == rlsconfv3.RateLimitUnit_UNKNOWN || rl.GetRequestsPerUnit() == 0) {
				t.Errorf("%s.%s: limit %v", path, key, rl)
			}
			walk(path+"."+key, d.GetDescriptors())
		}
	}
	walk(c.GetDomain(), c.GetDescriptors())
}

// TestGlobalRateLimitDescriptorsMatchConfig takes each route's rendered
// rate limits (its own and its host's), computes the descriptors Envoy
// sends for sample requests, and checks that the configuration the
// service is given (RateLimitConfigs) holds, for each, exactly the limit
// the policy set: a mismatch would leave requests silently unlimited.
func TestGlobalRateLimitDescriptorsMatchConfig(t *testing.T) {
	cfg := loadGlobalRateLimitCase(t)
	res, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rls := RateLimitConfigs(cfg)
	if len(rls) != 1 || rls[0].GetDomain() != "switchyard_edge" || rls[0].GetName() != "switchyard_edge" {
		t.Fatalf("RateLimitConfigs: got %v; want one config, domain and name switchyard_edge", rls)
	}
	checkLoadable(t, rls[0])
	// What each limit ID must find, from the IR.
	want := map[string]ir.GlobalRateLimit{}
	for _, l := range cfg.Listeners {
		for _, vh := range l.VirtualHosts {
			for _, gl := range vh.GlobalRateLimits {
				want[gl.ID] = gl
			}
			for _, r := range vh.Routes {
				for _, gl := range r.GlobalRateLimits {
					want[gl.ID] = gl
				}
			}
		}
	}
	requests := map[string]request{
		"all":       {clientIP: "192.0.2.7", path: "/login?x=1", cluster: "api", headers: map[string]string{"x-api-key": "k1"}},
		"no header": {clientIP: "192.0.2.8", path: "/api/orders", cluster: "web-canary"},
	}
	found := map[string]bool{}
	rc := res[resource.RouteType][0].(*routev3.RouteConfiguration)
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			limits := append(append([]*routev3.RateLimit(nil), r.GetRoute().GetRateLimits()...), vh.GetRateLimits()...)
			if r.GetRoute() == nil && len(vh.GetRateLimits()) > 0 {
				continue // Envoy's rate limit filter skips routes that answer themselves
			}
			for name, req := range requests {
				descs := envoyDescriptors(t, limits, req)
				if len(descs) != len(limits) {
					t.Errorf("route %q, request %q: %d descriptors for %d limits", r.GetName(), name, len(descs), len(limits))
				}
				for _, d := range descs {
					id := d[0][1]
					got := serviceLimit(rls[0], d)
					w, ok := want[id]
					switch {
					case !ok || d[0][0] != DescriptorKeyLimit:
						t.Errorf("route %q: descriptor %v names no limit", r.GetName(), d)
					case got == nil:
						t.Errorf("route %q, request %q: descriptor %v: the service has no limit for it; the request would be unlimited", r.GetName(), name, d)
					case got.GetRateLimit().GetRequestsPerUnit() != w.Requests ||
						!strings.EqualFold(got.GetRateLimit().GetUnit().String(), w.Unit) || got.GetShadowMode() != w.Shadow:
						t.Errorf("route %q, request %q: descriptor %v: got limit %v shadow %v; want %d per %s shadow %v",
							r.GetName(), name, d, got.GetRateLimit(), got.GetShadowMode(), w.Requests, w.Unit, w.Shadow)
					default:
						found[id] = true
					}
				}
			}
		}
	}
	for id := range want {
		if !found[id] {
			t.Errorf("limit %q: no request's descriptor found it", id)
		}
	}
	// The lookup can fail: a descriptor with an unknown key, or one
	// entry short of a limit, finds none.
	if got := serviceLimit(rls[0], [][2]string{{DescriptorKeyLimit, "route/public/shop_example_com/login/2"}, {"remote_address", "192.0.2.7"}}); got != nil {
		t.Errorf("a descriptor one entry short found limit %v", got)
	}
	if got := serviceLimit(rls[0], [][2]string{{DescriptorKeyLimit, "route/public/shop_example_com/login/1"}, {"x", "1"}}); got != nil {
		t.Errorf("a descriptor with an unknown key found limit %v", got)
	}
}

// TestRateLimitConfigsWithoutService: a group without a rate limit service
// gives the service nothing; one without limits gives an empty domain.
func TestRateLimitConfigsWithoutService(t *testing.T) {
	cfg := loadGlobalRateLimitCase(t)
	bare := &ir.Config{Group: cfg.Group, Listeners: []ir.Listener{{Name: "l", Port: 1, RateLimitService: cfg.Listeners[0].RateLimitService}}}
	got := RateLimitConfigs(bare)
	if len(got) != 1 || len(got[0].GetDescriptors()) != 0 || got[0].GetDomain() != "switchyard_edge" {
		t.Errorf("a service without limits: got %v; want one empty config for switchyard_edge", got)
	}
	bare.Listeners[0].RateLimitService = nil
	if got := RateLimitConfigs(bare); got != nil {
		t.Errorf("no service: got %v; want nil", got)
	}
}

// TestSentKeys lists the descriptors Envoy can send for a nested limit:
// with and without each header entry.
func TestSentKeys(t *testing.T) {
	got := sentKeys([]ir.RateLimitKey{{By: ir.RateLimitByClientIP}, {By: ir.RateLimitByHeader, Header: "x-api-key"}, {By: ir.RateLimitByPath}})
	want := [][]string{{"remote_address", "header", "path"}, {"remote_address", "path"}}
	if g, w := json.RawMessage(mustJSON(t, got)), json.RawMessage(mustJSON(t, want)); string(g) != string(w) {
		t.Errorf("sentKeys: got %s; want %s", g, w)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGlobalRateLimitAcceptedByEnvoy has real Envoy validate the golden
// group with global limits (--mode validate builds every listener,
// filter, route and cluster without opening sockets), served as static
// resources: EDS clusters carry their endpoints inline and RDS becomes
// the inline RouteConfiguration.
func TestGlobalRateLimitAcceptedByEnvoy(t *testing.T) {
	cfg := loadGlobalRateLimitCase(t)
	res, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	boot := staticEdgeBootstrap(t, cfg.Group, res, "")
	if out, err := envoyValidate(t, boot); err != nil {
		t.Fatalf("envoy --mode validate: %v\n%s", err, out)
	}
	// The harness can fail: a rate limit action Envoy does not know is
	// refused.
	bad := strings.Replace(string(boot), `"remoteAddress":{}`, `"remoteAddress":{"bogus":1}`, 1)
	if bad == string(boot) {
		t.Fatal("no remoteAddress action to break")
	}
	if out, err := envoyValidate(t, []byte(bad)); err == nil {
		t.Errorf("envoy accepted an unknown field in a rate limit action:\n%s", out)
	}
}

// The domain, cluster and descriptor keys are a contract with the rate
// limit service's configuration and stats: this test fails when one
// changes, so the change is deliberate.
func TestGlobalRateLimitNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{ir.RateLimitDomain("edge"), "switchyard_edge"},
		{ir.RateLimitCluster, "switchyard:ratelimit"},
		{DescriptorKeyLimit, "limit"},
		{DescriptorKeyClient, "remote_address"},
		{DescriptorKeyHeader, "header"},
		{DescriptorKeyPath, "path"},
		{DescriptorKeyService, "destination_cluster"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q; want %q", tc.got, tc.want)
		}
	}
}
