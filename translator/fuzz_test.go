package translator_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/test/testenv"
	"github.com/switchyard-io/switchyard/translator"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// FuzzPolicyToEnvoy feeds arbitrary policy files through the whole pipeline.
// Whatever the input, parsing does not panic and every finding names the
// file; and a policy that passes validation always builds into Envoy
// resources that pass ValidateAll, with no private key anywhere but a
// secret's private-key field. A policy that validates but fails to build
// would be rejected only at run time ("snapshot build failed"), an error the
// operator could not trace to a line.
//
// The policy sits in a directory of certificate files it may name (see
// fuzzFiles): good pairs, combined PEM files, a named pipe, a directory and
// a file over the size limit. The second argument picks, per routed
// service, what Consul knows of it (see fuzzServices), so both EDS and DNS
// clusters, and unregistered services, are built.
//
// `go test` runs the seeds below and the corpus in
// testdata/fuzz/FuzzPolicyToEnvoy; `make test` fuzzes for a short fixed
// time; run `go test ./translator -run '^$' -fuzz FuzzPolicyToEnvoy` to
// search longer. A failing input the fuzzer finds is written to the corpus
// directory: keep it there once fixed, as a regression test.
func FuzzPolicyToEnvoy(f *testing.F) {
	dir := fuzzFiles(f)
	file := filepath.Join(dir, "fuzz.yaml")

	var seeds []string
	for _, pattern := range []string{"testdata/*/policy/*.yaml", "../policy/testdata/bad/*.yaml", "../examples/quickstart/policies/*.yaml"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, m...)
	}
	if len(seeds) < 10 {
		f.Fatalf("found %d seed policies; the globs are stale", len(seeds))
	}
	for i, path := range seeds {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(i))
	}
	for _, s := range fuzzSeeds {
		f.Add([]byte(s.doc), s.mix)
	}

	f.Fuzz(func(t *testing.T, doc []byte, mix uint8) {
		set, diags := policy.Parse(map[string][]byte{file: doc})
		for _, d := range diags {
			if !strings.HasPrefix(d.Pos.File, file) && !strings.HasPrefix(d.Pos.File, ".") && !filepath.IsAbs(d.Pos.File) {
				t.Errorf("finding %q does not name the file", d.String())
			}
		}
		if diags.HasErrors() {
			if set != nil {
				t.Fatal("a set came back with errors")
			}
			return
		}
		if set == nil {
			t.Fatal("no set and no error")
		}
		snap := registry.NewSnapshot(fuzzServices(translator.Services(set), mix)...)
		res := translator.Translate(snap, set)
		// An EdgeTranslator gives the same, after translating another
		// Consul state (nothing to reuse but the listeners) and again
		// (every cluster reused, its warnings given again).
		var tr translator.EdgeTranslator
		tr.Translate(registry.NewSnapshot(fuzzServices(translator.Services(set), ^mix)...), set, nil)
		for i := range 2 {
			if got := tr.Translate(snap, set, nil); !reflect.DeepEqual(got, res) {
				t.Fatalf("an EdgeTranslator's translation %d differs from a fresh one\npolicy:\n%s", i+1, doc)
			}
		}
		for _, cfg := range res.Configs {
			built, err := envoy.Build(cfg)
			if err != nil {
				t.Fatalf("a policy that validates does not build: %v\npolicy:\n%s", err, doc)
			}
			for _, r := range built[resource.SecretType] {
				sec := proto.Clone(r.(*tlsv3.Secret)).(*tlsv3.Secret)
				if tc := sec.GetTlsCertificate(); tc != nil {
					tc.PrivateKey = nil
				}
				if text, _ := prototext.Marshal(sec); bytes.Contains(text, []byte("PRIVATE KEY")) {
					t.Fatalf("secret %q carries a private key outside its private-key field\npolicy:\n%s", sec.GetName(), doc)
				}
			}
		}
	})
}

// The seeds must keep reaching what they are for: a TLS listener with
// mutual TLS, an EDS and a DNS cluster, a split over registered and
// unregistered services, and refusals of the odd files.
func TestFuzzSeedsReach(t *testing.T) {
	dir := fuzzFiles(t)
	file := filepath.Join(dir, "fuzz.yaml")
	seed := func(name string) (string, uint8) {
		for _, s := range fuzzSeeds {
			if s.name == name {
				return s.doc, s.mix
			}
		}
		t.Fatalf("no seed %q", name)
		return "", 0
	}
	translate := func(name string) *ir.Config {
		t.Helper()
		doc, mix := seed(name)
		set, diags := policy.Parse(map[string][]byte{file: []byte(doc)})
		if diags.HasErrors() {
			t.Fatalf("seed %q: %v", name, diags.Err())
		}
		res := translator.Translate(registry.NewSnapshot(fuzzServices(translator.Services(set), mix)...), set)
		if len(res.Configs) != 1 {
			t.Fatalf("seed %q: %d configs; want 1", name, len(res.Configs))
		}
		return res.Configs[0]
	}

	cfg := translate("tls and mutual tls, EDS and DNS clusters")
	kinds := map[string]bool{}
	for _, c := range cfg.Clusters {
		kinds[c.Service] = c.DNS
	}
	if dns, ok := kinds["api"]; !ok || dns {
		t.Errorf("service api: want an EDS cluster; clusters (service: DNS) %v", kinds)
	}
	if dns, ok := kinds["web"]; !ok || !dns {
		t.Errorf("service web: want a DNS cluster; clusters (service: DNS) %v", kinds)
	}
	if built, err := envoy.Build(cfg); err != nil || len(built[resource.SecretType]) != 2 {
		t.Errorf("tls seed: %d secrets, %v; want the certificate and its CA", len(built[resource.SecretType]), err)
	}

	cfg = translate("split over EDS, DNS and unregistered services")
	var eds, dns, empty int
	for _, c := range cfg.Clusters {
		switch {
		case len(c.Endpoints) == 0:
			empty++
		case c.DNS:
			dns++
		default:
			eds++
		}
	}
	if eds != 1 || dns != 2 || empty != 1 {
		t.Errorf("split seed: %d EDS, %d DNS, %d empty clusters; want 1, 2, 1", eds, dns, empty)
	}

	for name, want := range map[string]string{
		"certificate is a named pipe": "not a regular file (a named pipe)",
		"key is a directory":          "not a regular file (a directory)",
		"CA over the size limit":      "file too large",
		"key is an endless device":    "not a regular file (a character device)",
	} {
		doc, _ := seed(name)
		_, diags := policy.Parse(map[string][]byte{file: []byte(doc)})
		if err := diags.Err(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("seed %q: got %v; want an error with %q", name, err, want)
		}
	}
}

// fuzzServices says what Consul knows of each routed service: two bits of
// mix per service (cycling) pick nothing (not registered), an IP instance
// (an EDS cluster), a host-name instance (a DNS cluster), or both and an
// unusable address (a DNS cluster and a warning).
func fuzzServices(names []string, mix uint8) []registry.Service {
	var svcs []registry.Service
	for i, name := range names {
		ip := registry.Instance{ID: name + "-1", Node: "n1", Address: "10.0.0.1", Port: 8080, Datacenter: "dc1", Health: registry.Healthy, Weight: 1}
		host := registry.Instance{ID: name + "-2", Node: "n2", Address: "host.example.com", Port: 8080, Datacenter: "dc1", Health: registry.Unhealthy, Weight: 3}
		bad := registry.Instance{ID: name + "-3", Node: "n3", Address: "999.999.999.999", Port: 8080, Datacenter: "dc2", Health: registry.Draining, Weight: 1000}
		var insts []registry.Instance
		switch mix >> (2 * (i % 4)) & 3 {
		case 0:
			continue
		case 1:
			insts = []registry.Instance{ip}
		case 2:
			insts = []registry.Instance{host}
		case 3:
			insts = []registry.Instance{ip, host, bad}
		}
		svcs = append(svcs, registry.Service{Name: name, Instances: insts})
	}
	return svcs
}

// fuzzFiles makes the files a fuzzed policy may name, relative to the
// directory it returns (where the policy "is"):
//
//	tls.crt, tls.key   a certificate for shop.example.com and its key
//	ca.crt             the CA that issued it
//	chain.pem          the certificate and the CA's
//	combined.pem       the certificate and its key in one file
//	ca-combined.pem    the CA's certificate and its key in one file
//	pipe.crt           a named pipe no one writes to
//	dir.crt            a directory
//	huge.crt           the certificate after 1 MiB of comment
func fuzzFiles(f testing.TB) string {
	dir := f.TempDir()
	ca := testenv.NewCA(f, "fuzz CA")
	leaf := ca.Issue(f, testenv.LeafOptions{Name: "shop.example.com", DNS: []string{"*.example.com"}})
	caKey, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		f.Fatal(err)
	}
	caKeyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: caKey})
	for name, b := range map[string][]byte{
		"tls.crt":         leaf.CertPEM,
		"tls.key":         leaf.KeyPEM,
		"ca.crt":          ca.PEM,
		"chain.pem":       append(bytes.Clone(leaf.CertPEM), ca.PEM...),
		"combined.pem":    append(bytes.Clone(leaf.CertPEM), leaf.KeyPEM...),
		"ca-combined.pem": append(bytes.Clone(ca.PEM), caKeyPEM...),
		"huge.crt":        append(bytes.Repeat([]byte("#"), 1<<20), leaf.CertPEM...),
	} {
		testenv.WriteFile(f, dir, name, b)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe.crt"), 0o600); err != nil {
		f.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "dir.crt"), 0o700); err != nil {
		f.Fatal(err)
	}
	return dir
}

// fuzzSeeds reach what the policy files in the repository do not: TLS with
// files that load, odd files, splits, control characters. mix is
// fuzzServices' argument. The review's findings are kept as named files in
// testdata/fuzz/FuzzPolicyToEnvoy (the same format as the failures the
// fuzzer writes there): a newline or a carriage return in a domain, which
// validated and then failed to build, and combined PEM files, whose private
// keys reached Envoy in the certificate and CA fields.
var fuzzSeeds = []struct {
	name string
	doc  string
	mix  uint8
}{
	{"tls and mutual tls, EDS and DNS clusters", tlsGroup("tls.crt", "tls.key", "ca.crt"), 0b1001},
	{"certificate chain", tlsGroup("chain.pem", "tls.key", ""), 0b01},
	{"certificate is a named pipe", tlsGroup("pipe.crt", "tls.key", ""), 0b01},
	{"key is a directory", tlsGroup("tls.crt", "dir.crt", ""), 0b01},
	{"CA over the size limit", tlsGroup("tls.crt", "tls.key", "huge.crt"), 0b01},
	{"key is an endless device", tlsGroup("tls.crt", "/dev/zero", ""), 0b01},
	{"split over EDS, DNS and unregistered services", `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - name: split
            match: { pathPrefix: /, headers: [{ name: x-env, regex: "prod|stage" }] }
            split:
              - { service: eds, weight: 1 }
              - { service: dns, weight: 0 }
              - { service: gone, weight: 4294967293 }
              - { service: mixed, weight: 1 }
            retries: { attempts: 3, on: [5xx, reset], perTryTimeout: 100ms }
            timeout: 1s
            rateLimit: { requests: 1, per: 50ms, burst: 1 }
`, 0b11_00_01_10},
	// More control characters: the review's findings (a newline or a
	// carriage return in a domain) are in the corpus directory.
	{"NUL in a path prefix", controlGroup(`domains: ["*"]`, `match: { pathPrefix: "/a\0b" }`), 0b01},
	{"newline in a header value", controlGroup(`domains: ["*"]`, `match: { headers: [{ name: x-a, exact: "1\r\nx-b: 2" }] }`), 0b01},
	{"control character in a path", controlGroup(`domains: ["*"]`, `match: { path: "/a\x7fb" }`), 0b11},
}

// tlsGroup is a group with a TLS listener whose certificate names the
// files given (caFile left out when "").
func tlsGroup(certFile, keyFile, caFile string) string {
	doc := `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: https
    port: 8443
    tls: { certificates: [shop] }
    hosts:
      - domains: [shop.example.com, "*.example.com"]
        routes:
          - { match: { pathPrefix: /api }, service: api }
          - service: web
---
apiVersion: switchyard.io/v1
kind: Certificate
name: shop
certFile: ` + certFile + `
keyFile: ` + keyFile + `
`
	if caFile != "" {
		doc += "caFile: " + caFile + "\n"
	}
	return doc
}

// controlGroup is a group with one host and route, given as YAML fragments.
func controlGroup(domains, match string) string {
	return `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    port: 8080
    hosts:
      - ` + domains + `
        routes:
          - ` + match + `
            service: web
`
}
