package envoy

import "testing"

// Names are an operator contract (dashboards and alerts key on them): this
// test fails when a format changes, so the change is deliberate.
func TestNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{ClusterName("web"), "web"},
		{SubsetClusterName("web", ""), "web"},
		{SubsetClusterName("web", "tag=v2"), "web~tag=v2"},
		{SubsetClusterName("web", "not(tag=v2)"), "web~not(tag=v2)"},
		{ListenerName("public"), "public"},
		{RouteConfigName("public"), "public"},
		{StatPrefix("public"), "public"},
		{SecretName("shop-cert"), "shop-cert"},
		{CASecretName("shop-cert"), "shop-cert.ca"},
		{LocalRateLimitStatPrefix("public", "shop.example.com", "api"), "ratelimit_public_shop_example_com_api"},
		{LocalRateLimitStatPrefix("http", "*", "limited"), "ratelimit_http_any_limited"},
		{XDSClusterName, "switchyard_xds"},
		{LocalAppClusterName, "local_app"},
		{PublicListenerName("10.0.0.7", 21000), "public_listener:10.0.0.7:21000"},
		{PublicListenerName("::", 21000), "public_listener:[::]:21000"},
		{PublicStatPrefix, "public_listener"},
		{PublicRouteConfigName, "public_listener"},
		{IntentionsStatPrefix, "connect_authz"},
		{PublicVirtualHostName, "local_app"},
		{MeshVirtualHostName, "upstream"},
		{UpstreamListenerName("api", "127.0.0.1", 9191), "api:127.0.0.1:9191"},
		{UpstreamStatPrefix("api"), "upstream.api"},
		{MeshClusterName("api.default.dc1.internal.11111111-2222.consul"), "api.default.dc1.internal.11111111-2222.consul"},
		{MeshRouteConfigName("api.default.dc1.internal.11111111-2222.consul"), "api.default.dc1.internal.11111111-2222.consul"},
		{IntentionsL4PolicyName, "intentions-l4"},
		{IntentionsL7PolicyName("web"), "intentions-l7-web"},
		{IntentionsL7PolicyName("*"), "intentions-l7-*"},
		{MeshLeafSecretName, "mesh.leaf"},
		{MeshRootsSecretName, "mesh.roots"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q; want %q", tc.got, tc.want)
		}
	}
}
