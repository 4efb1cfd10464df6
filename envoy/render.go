package envoy

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// Redacted returns a resource safe to show: a copy of a secret without its
// private key; any other resource as it is.
func Redacted(typ resource.Type, r types.Resource) proto.Message {
	if typ != resource.SecretType {
		return r
	}
	sec := proto.Clone(r).(*tlsv3.Secret)
	if tc := sec.GetTlsCertificate(); tc != nil && tc.PrivateKey != nil {
		tc.PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "[redacted]"}}
	}
	return sec
}

// RedactAll returns list with every secret redacted (see Redacted).
func RedactAll(typ resource.Type, list []types.Resource) []types.Resource {
	out := make([]types.Resource, len(list))
	for i, r := range list {
		out[i] = Redacted(typ, r)
	}
	return out
}

// RenderYAML renders resources as a YAML list with sorted keys. protojson
// alone is not byte-stable across runs; this is, so outputs can be diffed.
// It shows what it is given: redact secrets first (RedactAll) for display.
func RenderYAML(list []types.Resource) ([]byte, error) {
	if len(list) == 0 {
		return []byte("[]\n"), nil
	}
	var b strings.Builder
	for _, r := range list {
		js, err := protojson.Marshal(r)
		if err != nil {
			return nil, err
		}
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			return nil, err
		}
		b.WriteString("- ")
		b.WriteString(strings.ReplaceAll(strings.TrimRight(string(y), "\n"), "\n", "\n  "))
		b.WriteString("\n")
	}
	return []byte(b.String()), nil
}
