package envoy

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// secret builds the SDS TLS certificate for a policy Certificate. Keys
// travel only in Secrets, over the ADS stream, never inlined in listeners.
func secret(s *ir.Secret) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: SecretName(s.Name),
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(s.CertPEM),
			PrivateKey:       inline(s.KeyPEM.Reveal()),
		}},
	}
}

// caSecret builds the validation context that verifies client certificates.
func caSecret(s *ir.Secret) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: CASecretName(s.Name),
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(s.CAPEM),
		}},
	}
}

func inline(s string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
}
