package envoy

import "testing"

// Names are an operator contract (dashboards and alerts key on them): this
// test fails when a format changes, so the change is deliberate.
func TestNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{ClusterName("web"), "web"},
		{ListenerName("public"), "public"},
		{RouteConfigName("public"), "public"},
		{StatPrefix("public"), "public"},
		{SecretName("shop-cert"), "shop-cert"},
		{CASecretName("shop-cert"), "shop-cert.ca"},
		{LocalRateLimitStatPrefix("public", "shop.example.com", "api"), "ratelimit_public_shop_example_com_api"},
		{LocalRateLimitStatPrefix("http", "*", "limited"), "ratelimit_http_any_limited"},
		{XDSClusterName, "switchyard_xds"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q; want %q", tc.got, tc.want)
		}
	}
}
