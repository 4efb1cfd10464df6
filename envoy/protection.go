package envoy

import (
	"net/netip"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// ipAccessPolicy names the one RBAC policy of a route's IP access, which
// Envoy's rbac stats and debug logs show.
const ipAccessPolicy = "ip-access"

// rbacFilter has no rules of its own: routes with IP access set theirs.
func rbacFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: httpRBACFilterName, ConfigType: typedConfig(mustAny(&rbachttpv3.RBAC{}))}
}

// ipAccessRBAC turns a route's IP access into one DENY policy: a client
// in any denied range, or (with an allow list) in no allowed one. Envoy's
// remote_ip is the client's address as the listener determined it: the
// peer's, or with trusted hops the one X-Forwarded-For gives.
func ipAccessRBAC(a *ir.IPAccess) *anypb.Any {
	var refused []*rbacv3.Principal
	if len(a.Deny) > 0 {
		refused = append(refused, anyOf(a.Deny))
	}
	if len(a.Allow) > 0 {
		refused = append(refused, &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: anyOf(a.Allow)}})
	}
	rules := &rbacv3.RBAC{
		Action: rbacv3.RBAC_DENY,
		Policies: map[string]*rbacv3.Policy{ipAccessPolicy: {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
			Principals:  refused,
		}},
	}
	return mustAny(&rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: rules}})
}

// anyOf matches a client address in any of the ranges, which the IR
// holds in canonical form.
func anyOf(cidrs []string) *rbacv3.Principal {
	ids := make([]*rbacv3.Principal, 0, len(cidrs))
	for _, c := range cidrs {
		p := netip.MustParsePrefix(c)
		ids = append(ids, &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: &corev3.CidrRange{
			AddressPrefix: p.Addr().String(),
			PrefixLen:     wrapperspb.UInt32(uint32(p.Bits())),
		}}})
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ids}}}
}
