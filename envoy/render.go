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

	"github.com/switchyard-io/switchyard/internal/redact"
)

// Redacted returns a resource safe to show: a secret's private key is
// replaced, whatever its form, and any PEM private key block in any other
// field of any resource (a combined file that slipped into a certificate
// chain or a CA) becomes "[redacted]". Returns r itself when nothing needed
// redacting, a changed copy otherwise: r, which may be what Envoy is
// served, is never modified.
func Redacted(typ resource.Type, r types.Resource) proto.Message {
	var m proto.Message = r
	if typ == resource.SecretType {
		if sec, ok := r.(*tlsv3.Secret); ok && sec.GetTlsCertificate().GetPrivateKey() != nil {
			sec = proto.Clone(sec).(*tlsv3.Secret)
			sec.GetTlsCertificate().PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: redact.Text}}
			m = sec
		}
	}
	js, err := protojson.Marshal(m)
	if err != nil {
		return m.ProtoReflect().New().Interface() // unknown content: show nothing
	}
	if !redact.HasPEMKey(string(js)) {
		return m
	}
	// JSON quoting keeps PEM markers intact, so redact the JSON text and
	// read it back: every string field, inside Any too, in one pass.
	out := m.ProtoReflect().New().Interface()
	if err := protojson.Unmarshal([]byte(redact.PEMKeys(string(js))), out); err != nil {
		return m.ProtoReflect().New().Interface() // empty rather than a key
	}
	return out
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
