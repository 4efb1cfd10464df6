package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// run executes the CLI in-process and returns stdout, stderr and the error.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := newRootCmd(&stdout, &stderr)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return stdout.String(), stderr.String(), err
}

// serveRefusalBound is how long a `serve` given bad settings may take to
// refuse them. It refuses before it opens anything, in milliseconds; the
// bound is generous for a loaded machine yet far below the suite's timeout.
const serveRefusalBound = 10 * time.Second

// serveRefused runs `serve` with args, which must make it refuse to start,
// and returns its error. A serve that starts serving instead (it stopped
// rejecting the setting) fails the test after serveRefusalBound rather than
// hanging until the suite's timeout. It gets free loopback ports and a
// Consul address nothing listens on, so even then it disturbs nothing.
func serveRefused(t *testing.T, args ...string) error {
	t.Helper()
	returned, err := serveWithin(t, serveRefusalBound, args...)
	if !returned {
		t.Fatalf("serve %v was still running after %s; want it to refuse the settings at once", args, serveRefusalBound)
	}
	return err
}

// serveWithin runs `serve` with args for at most d. It returns true and
// serve's error if serve returned within d; otherwise it stops serve (by
// cancelling its context) and returns false.
func serveWithin(t *testing.T, d time.Duration, args ...string) (bool, error) {
	t.Helper()
	safe := []string{"serve",
		"--xds-address", testenv.Addr(testenv.FreePort(t)),
		"--admin-address", testenv.Addr(testenv.FreePort(t)),
		"--consul-address", testenv.Addr(testenv.FreePort(t))}
	var stdout, stderr testenv.SyncBuffer
	cmd := newRootCmd(&stdout, &stderr)
	cmd.SetArgs(append(safe, args...))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	select {
	case err := <-done:
		return true, err
	case <-time.After(d):
	}
	cancel()
	select {
	case <-done:
	case <-time.After(serveRefusalBound):
		t.Errorf("serve %v did not stop within %s of its context ending", args, serveRefusalBound)
	}
	return false, nil
}

// TestServeRefusalIsBounded proves serveRefused's bound works: a serve with
// good settings keeps running, and serveWithin reports it and stops it
// instead of waiting for it.
func TestServeRefusalIsBounded(t *testing.T) {
	returned, err := serveWithin(t, 2*time.Second, "--policy", "../../examples/quickstart/policies")
	if returned {
		t.Fatalf("serve with good settings returned %v; want it still serving when the bound passed", err)
	}
}

func TestValidate(t *testing.T) {
	stdout, stderr, err := run(t, "validate", "../../examples/quickstart/policies")
	if err != nil {
		t.Fatalf("validate quickstart: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "valid: 1 proxy group(s)") {
		t.Errorf("got stdout %q; want the summary", stdout)
	}

	dir := t.TempDir()
	bad := "apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: edge\nlisteners:\n  - name: http\n    port: 10000\n    hosts:\n      - domains: [\"*\"]\n        routes:\n          - match: { pathRegex: \"(\" }\n            sevice: web\n"
	if err := os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, err = run(t, "validate", dir)
	var ee exitError
	if !errors.As(err, &ee) {
		t.Fatalf("got err %v; want an exit error (status 1)", err)
	}
	path := filepath.Join(dir, "edge.yaml")
	for _, want := range []string{path + ":11: ", `"sevice"`, path + ":10: "} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

// TestBootstrapAcceptedByEnvoy checks both xDS variants with real Envoy's
// own validation mode.
func TestBootstrapAcceptedByEnvoy(t *testing.T) {
	envoy := testenv.Bin(t, "envoy")
	for _, protocol := range []string{"delta", "sotw"} {
		t.Run(protocol, func(t *testing.T) {
			stdout, stderr, err := run(t, "bootstrap", "--node-id", "edge-1", "--group", "edge", "--xds-protocol", protocol)
			if err != nil {
				t.Fatalf("bootstrap: %v\n%s", err, stderr)
			}
			wantAPI := map[string]string{"delta": "apiType: DELTA_GRPC", "sotw": "apiType: GRPC"}[protocol]
			if !strings.Contains(stdout, wantAPI) || !strings.Contains(stdout, "cluster: edge") || !strings.Contains(stdout, "id: edge-1") {
				t.Fatalf("bootstrap lacks %q, the group or the node id:\n%s", wantAPI, stdout)
			}
			path := filepath.Join(t.TempDir(), "envoy.yaml")
			if err := os.WriteFile(path, []byte(stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(envoy, "--mode", "validate", "-c", path, "--use-dynamic-base-id").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "OK") {
				t.Fatalf("envoy --mode validate: %v\n%s", err, out)
			}
		})
	}
	if _, _, err := run(t, "bootstrap", "--node-id", "x", "--group", "edge", "--xds-protocol", "grpc"); err == nil || !strings.Contains(err.Error(), "--xds-protocol") {
		t.Errorf("got %v; want an error naming --xds-protocol", err)
	}
	if _, _, err := run(t, "bootstrap", "--group", "edge"); err == nil || !strings.Contains(err.Error(), "node-id") {
		t.Errorf("got %v; want an error naming the missing --node-id", err)
	}
}

// TestBootstrapWithXDSTLS checks the mutual TLS bootstrap with real Envoy's
// validation mode (which loads the files), and the mistakes it refuses.
func TestBootstrapWithXDSTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "xds CA")
	client := ca.Issue(t, testenv.LeafOptions{Name: "edge-1", Client: true})
	caFile := testenv.WriteFile(t, dir, "ca.crt", ca.PEM)
	certFile := testenv.WriteFile(t, dir, "envoy.crt", client.CertPEM)
	keyFile := testenv.WriteFile(t, dir, "envoy.key", client.KeyPEM)
	for _, tc := range []struct {
		name, address, serverName, wantSAN string
	}{
		{"IP address", "10.0.0.5:18000", "", "IP_ADDRESS"},
		{"DNS name", "switchyard.internal:18000", "", "sni: switchyard.internal"},
		{"server name", "10.0.0.5:18000", "xds.example.com", "sni: xds.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"bootstrap", "--node-id", "edge-1", "--group", "edge", "--xds-address", tc.address,
				"--xds-ca-file", caFile, "--xds-cert-file", certFile, "--xds-key-file", keyFile}
			if tc.serverName != "" {
				args = append(args, "--xds-server-name", tc.serverName)
			}
			stdout, stderr, err := run(t, args...)
			if err != nil {
				t.Fatalf("bootstrap: %v\n%s", err, stderr)
			}
			for _, want := range []string{"envoy.transport_sockets.tls", caFile, certFile, keyFile, tc.wantSAN} {
				if !strings.Contains(stdout, want) {
					t.Errorf("bootstrap lacks %q:\n%s", want, stdout)
				}
			}
			if strings.Contains(stdout, "PRIVATE KEY") {
				t.Errorf("bootstrap inlines key material:\n%s", stdout)
			}
			path := filepath.Join(t.TempDir(), "envoy.yaml")
			if err := os.WriteFile(path, []byte(stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(testenv.Bin(t, "envoy"), "--mode", "validate", "-c", path, "--use-dynamic-base-id").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "OK") {
				t.Fatalf("envoy --mode validate: %v\n%s", err, out)
			}
		})
	}
	for _, bad := range [][]string{
		{"--xds-cert-file", certFile, "--xds-key-file", keyFile}, // no CA
		{"--xds-ca-file", caFile, "--xds-cert-file", certFile},   // no key
	} {
		args := append([]string{"bootstrap", "--node-id", "x", "--group", "edge"}, bad...)
		if _, _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), "xds") {
			t.Errorf("bootstrap %v: got %v; want an error about the xDS TLS flags", bad, err)
		}
	}
}

// TestBootstrapWithReplicas: several --xds-address (repeated or
// comma-separated) become the xDS cluster's endpoints, in a bootstrap real
// Envoy accepts; mistakes are refused by name.
func TestBootstrapWithReplicas(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "xds CA")
	caFile := testenv.WriteFile(t, dir, "ca.crt", ca.PEM)
	for _, tc := range []struct {
		name  string
		args  []string
		want  []string
		avoid string
	}{
		{"repeated", []string{"--xds-address", "10.0.0.5:18000", "--xds-address", "10.0.0.6:18000"},
			[]string{"address: 10.0.0.5", "address: 10.0.0.6", "type: STATIC"}, ""},
		{"comma-separated names", []string{"--xds-address", "sy-1.internal:18000,sy-2.internal:18000"},
			[]string{"address: sy-1.internal", "address: sy-2.internal", "type: STRICT_DNS"}, ""},
		{"TLS with one name", []string{"--xds-address", "10.0.0.5:18000,10.0.0.6:18000", "--xds-ca-file", caFile, "--xds-server-name", "xds.internal"},
			[]string{"address: 10.0.0.6", "sni: xds.internal"}, "IP_ADDRESS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, err := run(t, append([]string{"bootstrap", "--node-id", "edge-1", "--group", "edge"}, tc.args...)...)
			if err != nil {
				t.Fatalf("bootstrap: %v\n%s", err, stderr)
			}
			for _, want := range tc.want {
				if !strings.Contains(stdout, want) {
					t.Errorf("bootstrap lacks %q:\n%s", want, stdout)
				}
			}
			if tc.avoid != "" && strings.Contains(stdout, tc.avoid) {
				t.Errorf("bootstrap has %q:\n%s", tc.avoid, stdout)
			}
			path := filepath.Join(t.TempDir(), "envoy.yaml")
			if err := os.WriteFile(path, []byte(stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(testenv.Bin(t, "envoy"), "--mode", "validate", "-c", path, "--use-dynamic-base-id").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "OK") {
				t.Fatalf("envoy --mode validate: %v\n%s", err, out)
			}
		})
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--xds-address", "10.0.0.5:18000,10.0.0.5:18000"}, "given twice"},
		{[]string{"--xds-address", "10.0.0.5:18000,10.0.0.6"}, `"10.0.0.6"`},
		{[]string{"--xds-address", "10.0.0.5:18000,10.0.0.6:18000", "--xds-ca-file", caFile}, "--xds-server-name"},
	} {
		_, _, err := run(t, append([]string{"bootstrap", "--node-id", "x", "--group", "edge"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bootstrap %v: got %v; want an error naming %s", tc.args, err, tc.want)
		}
	}
}

// TestBootstrapPrometheusListener: --prometheus-address adds a static
// listener and the admin cluster it forwards to, in a bootstrap real Envoy
// accepts; the admin address itself is refused.
func TestBootstrapPrometheusListener(t *testing.T) {
	stdout, stderr, err := run(t, "bootstrap", "--node-id", "edge-1", "--group", "edge",
		"--admin-address", "127.0.0.1:9901", "--prometheus-address", "0.0.0.0:9102")
	if err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, stderr)
	}
	for _, want := range []string{"name: switchyard_prometheus", "portValue: 9102", "name: switchyard_self_admin", "prefixRewrite: /stats/prometheus", "path: /metrics"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("bootstrap lacks %q:\n%s", want, stdout)
		}
	}
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte(stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(testenv.Bin(t, "envoy"), "--mode", "validate", "-c", path, "--use-dynamic-base-id").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		t.Fatalf("envoy --mode validate: %v\n%s", err, out)
	}
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1:9901", "admin address"},
		{"0.0.0.0:9901", "admin address"},
		{"9102", `"9102"`},
	} {
		_, _, err := run(t, "bootstrap", "--node-id", "x", "--group", "edge", "--admin-address", "127.0.0.1:9901", "--prometheus-address", tc.addr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--prometheus-address %s: got %v; want an error naming %s", tc.addr, err, tc.want)
		}
	}
}

// TestBootstrapEnvoyVersion: --envoy-version outside the supported range
// warns (and still prints the bootstrap); a malformed one is an error.
func TestBootstrapEnvoyVersion(t *testing.T) {
	base := []string{"bootstrap", "--node-id", "edge-1", "--group", "edge"}
	for _, tc := range []struct {
		version string
		warns   bool
	}{{"1.40.0", false}, {"1.36.4", false}, {"1.35.9", true}, {"1.41.0", true}, {"2.0.0", true}} {
		stdout, stderr, err := run(t, append(base, "--envoy-version", tc.version)...)
		if err != nil || !strings.Contains(stdout, "node:") {
			t.Fatalf("--envoy-version %s: %v\n%s", tc.version, err, stderr)
		}
		if warned := strings.Contains(stderr, "outside the supported range 1.36 to 1.40"); warned != tc.warns {
			t.Errorf("--envoy-version %s: warned %v, want %v: %q", tc.version, warned, tc.warns, stderr)
		}
	}
	if _, _, err := run(t, append(base, "--envoy-version", "latest")...); err == nil || !strings.Contains(err.Error(), "--envoy-version") {
		t.Errorf("--envoy-version latest: got %v; want an error naming the flag", err)
	}
}

func TestServeRejectsUnknownSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "switchyard.yaml")
	if err := os.WriteFile(file, []byte("consul:\n  adress: 127.0.0.1:8500\nlog:\n  level: info\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := serveRefused(t, "--config", file)
	if err == nil || !strings.Contains(err.Error(), `"consul.adress"`) || !strings.Contains(err.Error(), file) {
		t.Fatalf("got %v; want an error naming the file and consul.adress", err)
	}

	t.Setenv("SWITCHYARD_CONSUL_ADRES", "x")
	err = serveRefused(t, "--policy", dir)
	if err == nil || !strings.Contains(err.Error(), "SWITCHYARD_CONSUL_ADRES") {
		t.Fatalf("got %v; want an error naming SWITCHYARD_CONSUL_ADRES", err)
	}
}

func TestServeRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--log-level", "loud"}, "log.level"},
		{[]string{"--log-format", "xml"}, "log.format"},
		{[]string{"--debounce-holdoff", "soon"}, "debounce-holdoff"},
		{[]string{"--consul-max-service-watches", "-1"}, "consul.max-service-watches"},
		{[]string{"--consul-max-mesh-watches", "-1"}, "consul.max-mesh-watches"},
		{[]string{"--memory-limit", "2G"}, "memory.limit"},
		{[]string{"--memory-limit", "1MiB"}, "memory.limit"},
	} {
		err := serveRefused(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("serve %v: got %v; want an error naming %s", tc.args, err, tc.want)
		}
	}
}

func TestHelpDocumentsEverySetting(t *testing.T) {
	stdout, _, err := run(t, "serve", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		for _, want := range []string{"--" + s.flag, s.key, envName(s.key)} {
			if !strings.Contains(stdout, want) {
				t.Errorf("serve --help lacks %q", want)
			}
		}
	}
}

func TestVersion(t *testing.T) {
	stdout, _, err := run(t, "version")
	if err != nil || !strings.HasPrefix(stdout, "switchyard ") {
		t.Fatalf("got %q, %v; want \"switchyard <version>\"", stdout, err)
	}
}

// settingsFrom resolves settings as serve does: args, then environment,
// then the settings file body (if any), then defaults.
func settingsFrom(t *testing.T, args []string, file string) (*viper.Viper, error) {
	t.Helper()
	v := viper.New()
	f := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	bindSettings(v, f)
	if err := f.Parse(args); err != nil {
		t.Fatal(err)
	}
	path := ""
	if file != "" {
		path = filepath.Join(t.TempDir(), "switchyard.yaml")
		if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return v, loadSettings(v, path)
}

func TestSettingsPrecedence(t *testing.T) {
	file := "consul:\n  address: file:8500\n  datacenter: file-dc\n  wait: 2m\n  stale-hold: 0\npolicy:\n  paths: [a, b]\n"
	t.Setenv("SWITCHYARD_CONSUL_ADDRESS", "env:8500")
	t.Setenv("SWITCHYARD_CONSUL_DATACENTER", "env-dc")
	v, err := settingsFrom(t, []string{"--consul-address", "flag:8500", "--policy", "x", "--policy", "y,z"}, file)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"consul.address":    "flag:8500", // flag beats env and file
		"consul.datacenter": "env-dc",    // env beats file
		"consul.wait":       "2m0s",      // file beats default
		"consul.scheme":     "http",      // default
	} {
		got := v.GetString(key)
		if key == "consul.wait" {
			got = v.GetDuration(key).String()
		}
		if got != want {
			t.Errorf("%s: got %q; want %q", key, got, want)
		}
	}
	if got := v.GetStringSlice("policy.paths"); strings.Join(got, " ") != "x y z" {
		t.Errorf("policy.paths: got %q; want [x y z]", got)
	}
}

func TestSettingsTypos(t *testing.T) {
	for _, tc := range []struct {
		name, file, env, want string
		secret                string // must not appear in the error
	}{
		{"duration without unit", "consul:\n  stale-hold: 300\n", "", "consul.stale-hold: 300 needs a unit", ""},
		{"bad duration", "debounce:\n  holdoff: soon\n", "", `debounce.holdoff: "soon" is not a duration`, ""},
		{"bad bool in file", "consul:\n  stale: yes please\n", "", `consul.stale: "yes please" is not true or false`, ""},
		{"bad bool in env", "", "ture", `consul.stale: "ture" is not true or false`, ""},
		{"list for a string", "consul:\n  address: [a, b]\n", "", "consul.address: want a single value, not []interface {}", ""},
		{"unquoted number for a string", "consul:\n  token: 0777123\n", "", "consul.token: YAML read the value as int, not text; quote it", "261715"},
		{"map for paths", "policy:\n  paths: {a: b}\n", "", `key "policy.paths.a"`, ""},
		{"number list for paths", "policy:\n  paths: [1, 2]\n", "", "policy.paths: want a list of paths", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("SWITCHYARD_CONSUL_STALE", tc.env)
			}
			_, err := settingsFrom(t, nil, tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want an error containing %q", err, tc.want)
			}
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Fatalf("error %q repeats the token's value", err)
			}
		})
	}
}

// TestBootstrapOverloadProtection checks the overload manager the bootstrap
// sets by default, with other limits and switched off, each accepted by
// real Envoy's validation mode, and the values it refuses.
func TestBootstrapOverloadProtection(t *testing.T) {
	envoy := testenv.Bin(t, "envoy")
	for _, tc := range []struct {
		name       string
		flags      []string
		want, lack []string
	}{
		{"defaults", nil, []string{
			"envoy.resource_monitors.global_downstream_max_connections", `maxActiveDownstreamConnections: "50000"`,
			"ignoreGlobalConnLimit: true",
			"envoy.resource_monitors.fixed_heap", `maxHeapSizeBytes: "1073741824"`,
			"envoy.overload_actions.shrink_heap", "envoy.overload_actions.disable_http_keepalive",
			"envoy.overload_actions.stop_accepting_requests", "envoy.load_shed_points.tcp_listener_accept",
		}, nil},
		{"set", []string{"--max-connections", "5", "--max-heap-bytes", "536870912"}, []string{
			`maxActiveDownstreamConnections: "5"`, `maxHeapSizeBytes: "536870912"`,
		}, nil},
		{"connections only", []string{"--max-heap-bytes", "0"}, []string{
			`maxActiveDownstreamConnections: "50000"`,
		}, []string{"fixed_heap", "overload_actions"}},
		{"heap only", []string{"--max-connections", "0"}, []string{
			`maxHeapSizeBytes: "1073741824"`,
		}, []string{"global_downstream_max_connections", "ignoreGlobalConnLimit"}},
		{"off", []string{"--max-connections", "0", "--max-heap-bytes", "0"}, nil, []string{"overloadManager", "ignoreGlobalConnLimit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"bootstrap", "--node-id", "edge-1", "--group", "edge"}, tc.flags...)
			stdout, stderr, err := run(t, args...)
			if err != nil {
				t.Fatalf("bootstrap %v: %v\n%s", tc.flags, err, stderr)
			}
			for _, want := range tc.want {
				if !strings.Contains(stdout, want) {
					t.Errorf("bootstrap %v lacks %q:\n%s", tc.flags, want, stdout)
				}
			}
			for _, lack := range tc.lack {
				if strings.Contains(stdout, lack) {
					t.Errorf("bootstrap %v has %q:\n%s", tc.flags, lack, stdout)
				}
			}
			path := filepath.Join(t.TempDir(), "envoy.yaml")
			if err := os.WriteFile(path, []byte(stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(envoy, "--mode", "validate", "-c", path, "--use-dynamic-base-id").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "OK") {
				t.Fatalf("envoy --mode validate: %v\n%s", err, out)
			}
		})
	}
	for _, bad := range [][]string{
		{"--max-connections", "-1"},
		{"--max-heap-bytes", "1000000"},
	} {
		args := append([]string{"bootstrap", "--node-id", "x", "--group", "edge"}, bad...)
		if _, _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("bootstrap %v: got %v; want an error about %s", bad, err, bad[0])
		}
	}
}

// A value or a file name with control characters must not forge a line of
// validate's output, such as a "valid:" summary under an invalid policy.
func TestValidateOutputCannotBeForged(t *testing.T) {
	const forged = "valid: 9 proxy group(s), 0 certificate(s), 0 warning(s)"
	policies := map[string]string{
		// A domain with a newline: refused, and shown escaped.
		"domain.yaml": "apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: a\nlisteners:\n  - name: http\n    port: 10000\n    hosts:\n      - domains: [\"shop.example.com\\n" + forged + "\"]\n        routes:\n          - service: web\n",
		// An explicitly tagged number is printed as written.
		"port.yaml": "apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: b\nlisteners:\n  - name: http\n    port: !!int \"1\\n" + forged + "\"\n",
		// The file name itself (a warning names it: no listeners).
		"c\n" + forged + ".yaml": "apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: c\n",
	}
	dir := t.TempDir()
	for name, content := range policies {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stdout, stderr, err := run(t, "validate", dir)
	var ee exitError
	if !errors.As(err, &ee) {
		t.Fatalf("got err %v; want an exit error (status 1)", err)
	}
	for _, line := range strings.Split(stdout+stderr, "\n") {
		if strings.HasPrefix(line, "valid:") {
			t.Errorf("a policy value forged the output line %q:\n%s", line, stderr)
		}
	}
	for _, want := range []string{
		`domains must not contain control characters (such as newline, carriage return, tab or NUL), got "shop.example.com\n` + forged + `"`,
		`port must be between 1 and 65535, got 1\n` + forged,
		`c\n` + forged + `.yaml:3: warning: proxy group has no listeners`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

// A settings file that is a named pipe or a device fails the start at
// once, naming the file; it used to hang it (or exhaust memory).
func TestSettingsFileMustBeRegular(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "switchyard.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fifo, "/dev/zero"} {
		done := make(chan error, 1)
		go func() { done <- loadSettings(viper.New(), path) }()
		select {
		case err := <-done:
			if want := "settings file: read " + path + ": not a regular file"; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("loadSettings(%s): got %v; want an error with %q", path, err, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("loadSettings(%s) did not return", path)
		}
	}
}

// validate refuses a policy that defines no proxy group, as serve does, with
// the line serve logs (controlplane's TestEmptyPolicyIsRejected): one loader
// and one rule set decide for both.
func TestValidateRefusesEmptyPolicy(t *testing.T) {
	empty := t.TempDir()
	comments := filepath.Join(t.TempDir(), "comments.yaml")
	if err := os.WriteFile(comments, []byte("# no groups yet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{empty, comments} {
		stdout, stderr, err := run(t, "validate", path)
		var ee exitError
		if !errors.As(err, &ee) {
			t.Errorf("validate %s: got err %v, stdout %q; want an exit error (status 1)", path, err, stdout)
		}
		if want := path + ": no proxy group is defined; Switchyard will not serve an empty config\n"; !strings.Contains(stderr, want) {
			t.Errorf("validate %s: stderr %q lacks %q", path, stderr, want)
		}
	}
}

// validate --mesh-edge-identities checks as serve's mesh.edge-identities
// does: a group routing through the mesh with another identity is an
// error at its line; an allowed one passes.
func TestValidateEdgeIdentities(t *testing.T) {
	dir := t.TempDir()
	path := testenv.WriteFile(t, dir, "edge.yaml", []byte("apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: edge\nmesh: { service: edge-gateway }\nlisteners:\n  - name: http\n    port: 10000\n    hosts:\n      - domains: [\"*\"]\n        routes:\n          - { service: api, mesh: true }\n"))
	if _, stderr, err := run(t, "validate", "--mesh", "--mesh-edge-identities", "partner-gateway,edge-gateway", dir); err != nil {
		t.Errorf("validate with edge-gateway allowed: %v\n%s", err, stderr)
	}
	_, stderr, err := run(t, "validate", "--mesh", "--mesh-edge-identities", "partner-gateway", dir)
	want := path + `:4: proxy group "edge": mesh identity "edge-gateway" is not one the operator allows edge groups (mesh.edge-identities: partner-gateway)`
	if err == nil || !strings.Contains(stderr, want) {
		t.Errorf("validate with only partner-gateway allowed: %v\n%s\nwant an error %q", err, stderr, want)
	}
}
