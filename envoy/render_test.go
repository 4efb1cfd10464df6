package envoy

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	testCert = "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n"
	testKey  = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIkey\n-----END EC PRIVATE KEY-----\n"
)

// Redacted hides private keys wherever they are, in a copy: what Envoy is
// served keeps them.
func TestRedactedHidesEveryPEMKey(t *testing.T) {
	tlsSecret := &tlsv3.Secret{Name: "shop", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(testCert + testKey),
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("raw key bytes")}},
	}}}
	caSecret := &tlsv3.Secret{Name: "shop.ca", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: inline(testKey + testCert),
	}}}
	// A key inside an Any, inside a listener.
	ctx, _ := anypb.New(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: inline(testCert + testKey)}},
	}})
	lis := &listenerv3.Listener{Name: "public", FilterChains: []*listenerv3.FilterChain{{
		TransportSocket: &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: ctx}},
	}}}
	for _, tc := range []struct {
		typ resource.Type
		r   types.Resource
	}{
		{resource.SecretType, tlsSecret},
		{resource.SecretType, caSecret},
		{resource.ListenerType, lis},
	} {
		before := proto.Clone(tc.r)
		js, err := protojson.Marshal(Redacted(tc.typ, tc.r))
		if err != nil {
			t.Fatal(err)
		}
		if s := string(js); strings.Contains(s, "PRIVATE KEY") || strings.Contains(s, "MHcCAQEEIkey") || strings.Contains(s, "cmF3IGtleSBieXRlcw") {
			t.Errorf("%s %s: a key is shown:\n%s", tc.typ, GetName(tc.r), s)
		}
		if !strings.Contains(string(js), "MIIBcert") {
			t.Errorf("%s %s: the certificate is gone too:\n%s", tc.typ, GetName(tc.r), js)
		}
		if !proto.Equal(before, tc.r) {
			t.Errorf("%s %s: Redacted changed the served resource", tc.typ, GetName(tc.r))
		}
	}
	clean := &listenerv3.Listener{Name: "plain"}
	if got := Redacted(resource.ListenerType, clean); got != clean {
		t.Error("a resource without keys was copied; want it as it is")
	}
}
