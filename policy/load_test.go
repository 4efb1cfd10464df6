package policy_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/switchyard-io/switchyard/policy"
)

const minimalGroup = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: NAME
listeners:
  - name: http
    port: 8080
    hosts: [{ domains: ["*"], routes: [{ service: web }] }]
`

func TestLoadPaths(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	policies := filepath.Join(dir, "policies")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(policies, "b.yml"), []byte(replaceName(minimalGroup, "b")))
	writeFile(t, filepath.Join(policies, "a.yaml"), []byte(replaceName(minimalGroup, "a")))
	writeFile(t, filepath.Join(policies, "notes.txt"), []byte("ignored"))
	single := filepath.Join(dir, "single.conf") // named explicitly, so read whatever its extension
	writeFile(t, single, []byte(replaceName(minimalGroup, "single")))
	if err := os.Symlink(filepath.Join(policies, "a.yaml"), filepath.Join(dir, "link.yaml")); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	certs := filepath.Join(dir, "certs")
	writeCert(t, certs, "c")
	certOnly := filepath.Join(certs, "c.yaml")
	writeFile(t, certOnly, certDoc("c.crt", "c.key", ""))
	comments := filepath.Join(dir, "comments.yaml")
	writeFile(t, comments, []byte("# nothing yet\n"))

	tests := []struct {
		name       string
		paths      []string
		wantGroups []string
		wantFiles  []string
		wantDiags  []string
	}{
		{
			name:  "empty directory",
			paths: []string{empty},
			wantDiags: []string{
				empty + ": warning: no policy files (*.yaml, *.yml) in " + empty,
				empty + ": no proxy group is defined; Switchyard will not serve an empty config",
			},
		},
		{
			name:       "empty directory next to a group",
			paths:      []string{empty, single},
			wantGroups: []string{"single"},
			wantFiles:  []string{single},
			wantDiags:  []string{empty + ": warning: no policy files (*.yaml, *.yml) in " + empty},
		},
		{
			name:  "files without a proxy group",
			paths: []string{certOnly, comments},
			wantDiags: []string{
				certOnly + `:3: warning: certificate "c" is not used by any listener`,
				certOnly + ", " + comments + ": no proxy group is defined; Switchyard will not serve an empty config",
			},
		},
		{
			name:      "nonexistent path",
			paths:     []string{missing},
			wantDiags: []string{missing + ": cannot read policy path: no such file or directory"},
		},
		{
			name:       "directory and file",
			paths:      []string{policies, single},
			wantGroups: []string{"a", "b", "single"},
			wantFiles:  []string{filepath.Join(policies, "a.yaml"), filepath.Join(policies, "b.yml"), single},
		},
		{
			name:       "same directory twice",
			paths:      []string{policies, policies},
			wantGroups: []string{"a", "b"},
			wantFiles:  []string{filepath.Join(policies, "a.yaml"), filepath.Join(policies, "b.yml")},
		},
		{
			name:  "same group through a symlink",
			paths: []string{policies, filepath.Join(dir, "link.yaml")},
			wantDiags: []string{
				filepath.Join(dir, "link.yaml") + `:3: duplicate proxy group "a" (also defined at ` + filepath.Join(policies, "a.yaml") + ":3)",
			},
		},
	}
	// FilesIn lists what Load reads, for the watcher to check.
	wantFiles := []string{filepath.Join(policies, "a.yaml"), filepath.Join(policies, "b.yml"), single}
	if diff := cmp.Diff(wantFiles, policy.FilesIn(policies, single, missing)); diff != "" {
		t.Errorf("FilesIn (-want +got):\n%s", diff)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, diags := policy.Load(tt.paths...)
			if diff := cmp.Diff(tt.wantDiags, lines(diags)); diff != "" {
				t.Errorf("Load(%q) diagnostics (-want +got):\n%s", tt.paths, diff)
			}
			if diags.HasErrors() {
				if set != nil {
					t.Errorf("Load(%q) returned a Set despite errors", tt.paths)
				}
				return
			}
			var groups []string
			for _, g := range set.Groups {
				groups = append(groups, g.Name)
			}
			if diff := cmp.Diff(tt.wantGroups, groups); diff != "" {
				t.Errorf("Load(%q) groups (-want +got):\n%s", tt.paths, diff)
			}
			if diff := cmp.Diff(tt.wantFiles, set.Files()); diff != "" {
				t.Errorf("Load(%q) Files() (-want +got):\n%s", tt.paths, diff)
			}
		})
	}
}

// loadWithin calls policy.Load and fails the test if it does not return
// within a generous bound: a named pipe used to hang it for ever.
func loadWithin(t *testing.T, paths ...string) (*policy.Set, policy.Diagnostics) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		set   *policy.Set
		diags policy.Diagnostics
	}
	done := make(chan result, 1)
	go func() {
		set, diags := policy.Load(paths...)
		done <- result{set, diags}
	}()
	select {
	case r := <-done:
		return r.set, r.diags
	case <-ctx.Done():
		t.Fatalf("Load(%q) did not return", paths)
		return nil, nil
	}
}

// Named pipes, devices, directories and huge files, as policy files or as
// the certificate files a policy names, are errors naming the file, found
// at once, never a hang or an out-of-memory.
func TestLoadOddFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := func(path string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	withPipe := filepath.Join(dir, "with-pipe")
	writeFile(t, filepath.Join(withPipe, "a.yaml"), []byte(replaceName(minimalGroup, "a")))
	pipe := fifo(filepath.Join(withPipe, "b.yaml"))
	lonePipe := fifo(filepath.Join(dir, "lone.yaml"))
	huge := filepath.Join(dir, "huge.yaml")
	writeFile(t, huge, []byte(replaceName(minimalGroup, "huge")+strings.Repeat("#", 4<<20)))

	certs := filepath.Join(dir, "certs")
	c := writeCert(t, certs, "c", "c.example.com")
	certPipe := fifo(filepath.Join(certs, "pipe.crt"))
	hugeCert := filepath.Join(certs, "huge.crt")
	writeFile(t, hugeCert, append(c.certPEM, strings.Repeat("#", 1<<20)...))
	writeFile(t, filepath.Join(certs, "pipe.yaml"), certDoc("pipe.crt", "c.key", ""))
	writeFile(t, filepath.Join(certs, "zero.yaml"), certDoc("c.crt", "/dev/zero", ""))
	writeFile(t, filepath.Join(certs, "huge-ca.yaml"), certDoc("c.crt", "c.key", "huge.crt"))

	tests := []struct {
		name  string
		paths []string
		want  string // one of the diagnostics
	}{
		{"named pipe in a directory", []string{withPipe}, pipe + ": cannot read policy file: not a regular file (a named pipe)"},
		{"named pipe given as a path", []string{lonePipe}, lonePipe + ": cannot read policy file: not a regular file (a named pipe)"},
		{"endless device", []string{"/dev/zero"}, "/dev/zero: cannot read policy file: not a regular file (a character device)"},
		{"policy over 4 MiB", []string{huge}, huge + ": cannot read policy file: file too large: "},
		{"certFile is a named pipe", []string{filepath.Join(certs, "pipe.yaml")}, filepath.Join(certs, "pipe.yaml") + ":4: cannot read certFile " + certPipe + ": not a regular file (a named pipe)"},
		{"keyFile is an endless device", []string{filepath.Join(certs, "zero.yaml")}, filepath.Join(certs, "zero.yaml") + ":5: cannot read keyFile /dev/zero: not a regular file (a character device)"},
		{"caFile over 1 MiB", []string{filepath.Join(certs, "huge-ca.yaml")}, filepath.Join(certs, "huge-ca.yaml") + ":6: cannot read caFile " + hugeCert + ": file too large: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, diags := loadWithin(t, tt.paths...)
			if set != nil {
				t.Errorf("Load(%q) returned a Set; want none", tt.paths)
			}
			found := false
			for _, d := range lines(diags) {
				found = found || strings.HasPrefix(d, tt.want)
			}
			if !found {
				t.Errorf("Load(%q) diagnostics:\n%s\nwant one starting %q", tt.paths, strings.Join(lines(diags), "\n"), tt.want)
			}
		})
	}

	// A directory named like a policy file is not one: it is skipped.
	mixed := filepath.Join(dir, "mixed")
	writeFile(t, filepath.Join(mixed, "a.yaml"), []byte(replaceName(minimalGroup, "a")))
	if err := os.Mkdir(filepath.Join(mixed, "dir.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	if set, diags := loadWithin(t, mixed); diags.HasErrors() || set == nil {
		t.Errorf("Load(%s) with a directory named dir.yaml: %v", mixed, diags.Err())
	}
}

func TestParseEmpty(t *testing.T) {
	for _, src := range []string{"", "# only a comment\n", "---\n---\n"} {
		set, diags := policy.Parse(map[string][]byte{"p.yaml": []byte(src)})
		if set == nil || len(diags) != 0 || len(set.Groups) != 0 {
			t.Errorf("Parse(%q) = %v, %v; want an empty Set and no diagnostics", src, set, lines(diags))
		}
	}
}

func TestParseStrictTypes(t *testing.T) {
	tests := []struct {
		src  string
		want []string
	}{
		{"- just a list\n", []string{"p.yaml:1: a policy document must be a mapping, got a list"}},
		{"apiVersion: [switchyard.io/v1]\nkind: {}\n", []string{
			"p.yaml:1: apiVersion must be a string, got a list",
			"p.yaml:2: kind must be a string, got a mapping",
		}},
		{"apiVersion: switchyard.io/v1\nkind: Certificate\nname: c\ncertFile: [a]\nkeyFile: {}\n", []string{
			`p.yaml:3: warning: certificate "c" is not used by any listener`,
			"p.yaml:4: certFile must be a string, got a list",
			"p.yaml:5: keyFile must be a string, got a mapping",
		}},
		{"apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: g\nlisteners:\n  - just-a-name\n", []string{
			`p.yaml:5: listener must be a mapping, got the string "just-a-name"`,
		}},
		{"apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: g\nlisteners: [{ name: l, port: 1, hosts: [{ domains: ['*'], routes: [{ service: s, match: { headers: [{ name: h, present: yes }] } }] }] }]\n", []string{
			`p.yaml:4: present must be true or false, got the string "yes"`,
		}},
		{"apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: g\nlisteners: [{ name: l, port: 1.5 }]\n", []string{
			"p.yaml:4: port must be an integer, got the number 1.5",
			"p.yaml:4: warning: listener has no hosts; Envoy will answer every request with 404",
		}},
		{"apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: g\nlisteners: [{ name: l, port: 99999999999999999999999 }]\n", []string{
			"p.yaml:4: port must be an integer, got the number 99999999999999999999999",
			"p.yaml:4: warning: listener has no hosts; Envoy will answer every request with 404",
		}},
		{"apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: g\nlisteners: [{ name: l, port: -1 }]\n", []string{
			"p.yaml:4: port must be between 1 and 65535, got -1",
			"p.yaml:4: warning: listener has no hosts; Envoy will answer every request with 404",
		}},
	}
	for _, tt := range tests {
		_, diags := policy.Parse(map[string][]byte{"p.yaml": []byte(tt.src)})
		if diff := cmp.Diff(tt.want, lines(diags)); diff != "" {
			t.Errorf("Parse(%q) diagnostics (-want +got):\n%s", tt.src, diff)
		}
	}
}

func TestDiagnostics(t *testing.T) {
	ds := policy.Diagnostics{
		{Pos: policy.Pos{File: "a.yaml", Line: 3}, Message: "bad port"},
		{Pos: policy.Pos{File: "a.yaml", Line: 4}, Severity: policy.SeverityWarning, Message: "no hosts"},
		{Pos: policy.Pos{File: "dir"}, Message: "cannot read"},
	}
	want := []string{"a.yaml:3: bad port", "a.yaml:4: warning: no hosts", "dir: cannot read"}
	if diff := cmp.Diff(want, lines(ds)); diff != "" {
		t.Errorf("String() (-want +got):\n%s", diff)
	}
	if !ds.HasErrors() {
		t.Error("HasErrors() = false; want true")
	}
	if got := len(ds.Errors()); got != 2 {
		t.Errorf("len(Errors()) = %d; want 2", got)
	}
	if got := len(ds.Warnings()); got != 1 {
		t.Errorf("len(Warnings()) = %d; want 1", got)
	}
	if got, want := ds.Err().Error(), "a.yaml:3: bad port\ndir: cannot read"; got != want {
		t.Errorf("Err() = %q; want %q", got, want)
	}
	if err := ds.Warnings().Err(); err != nil {
		t.Errorf("Warnings().Err() = %v; want nil", err)
	}
	var none policy.Diagnostics
	if none.HasErrors() || !errors.Is(none.Err(), nil) {
		t.Error("empty Diagnostics report errors")
	}
}

func replaceName(s, name string) string { return strings.Replace(s, "NAME", name, 1) }

// With the mesh on, a policy without proxy groups is valid: sidecars take
// their config from Consul.
func TestLoadMeshNeedsNoGroup(t *testing.T) {
	dir := t.TempDir()
	if _, diags := policy.Load(dir); !diags.HasErrors() {
		t.Error("an empty policy is valid without the mesh; want the no-proxy-group error")
	}
	set, diags := policy.LoadWith(policy.Options{Mesh: true}, dir)
	if diags.HasErrors() || set == nil {
		t.Errorf("an empty policy with the mesh: %v; want valid", diags)
	}
}

// edgeMeshPolicy is a group with a mesh identity, a route through the
// mesh and one that is not.
const edgeMeshPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
mesh:
  service: edge-gateway
listeners:
  - name: public
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - match: { pathPrefix: /api }
            service: api
            mesh: true
          - service: web
`

// A route through the mesh, and a group's mesh identity, need the mesh:
// without it both are errors naming their lines, for validate and serve
// alike; with it the policy is valid and says who the group is.
func TestLoadEdgeMesh(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(file, []byte(edgeMeshPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	_, diags := policy.Load(dir)
	want := []string{
		file + ":4: a proxy group's mesh identity needs the Connect mesh, which is off; run serve --mesh (and validate --mesh), or remove it",
		file + ":14: a route through the mesh (mesh: true) needs the Connect mesh, which is off; run serve --mesh (and validate --mesh), or remove it",
	}
	var got []string
	for _, d := range diags {
		got = append(got, d.String())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("without the mesh (-want +got):\n%s", diff)
	}

	set, diags := policy.LoadWith(policy.Options{Mesh: true}, dir)
	if diags.HasErrors() || len(diags) > 0 {
		t.Fatalf("with the mesh: %v; want no diagnostics", diags)
	}
	g, _ := set.Group("edge")
	if got := g.MeshService(); got != "edge-gateway" {
		t.Errorf("MeshService() = %q; want edge-gateway", got)
	}
	routes := g.Listeners[0].Hosts[0].Routes
	if !routes[0].Mesh || routes[1].Mesh || !g.UsesMesh() {
		t.Errorf("route mesh flags %v, %v, UsesMesh %v; want true, false, true", routes[0].Mesh, routes[1].Mesh, g.UsesMesh())
	}
}

// Without a mesh block a group's identity is its name; a mesh block no
// route uses is a warning; mistakes in the new fields are strict errors.
func TestParseEdgeMeshFields(t *testing.T) {
	set, diags := policy.Parse(map[string][]byte{"a.yaml": []byte(strings.Replace(edgeMeshPolicy, "mesh:\n  service: edge-gateway\n", "", 1))})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	if g, _ := set.Group("edge"); g.MeshService() != "edge" {
		t.Errorf("MeshService() = %q; want the group's name, edge", g.MeshService())
	}
	for _, tc := range []struct {
		name, from, to string
		want           []string
	}{
		{"unused identity", "mesh: true\n", "\n", []string{"a.yaml:4: warning: proxy group has a mesh identity but no route uses the mesh (mesh: true); it has no effect"}},
		{"bad service", "service: edge-gateway", "service: edge/gw", []string{`a.yaml:5: invalid service name "edge/gw": use letters, digits, '_', '.' and '-', starting with a letter or digit`}},
		{"unknown field", "service: edge-gateway", "name: edge-gateway", []string{`a.yaml:5: unknown field "name" in proxy group mesh`}},
		{"not a boolean", "mesh: true", "mesh: yes please", []string{
			`a.yaml:4: warning: proxy group has a mesh identity but no route uses the mesh (mesh: true); it has no effect`,
			`a.yaml:14: mesh must be true or false, got the string "yes please"`,
		}},
		{"not a mapping", "mesh:\n  service: edge-gateway\n", "mesh: edge-gateway\n", []string{`a.yaml:4: proxy group mesh must be a mapping, got the string "edge-gateway"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := policy.Parse(map[string][]byte{"a.yaml": []byte(strings.Replace(edgeMeshPolicy, tc.from, tc.to, 1))})
			var got []string
			for _, d := range diags {
				got = append(got, d.String())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// With an operator's list of edge identities (serve's
// mesh.edge-identities), a group routing through the mesh with any other
// identity is an error at its mesh block, or at its name when its name is
// its identity; the policy is then refused as a whole.
func TestLoadEdgeIdentitiesAllowed(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(file, []byte(edgeMeshPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	if set, diags := policy.LoadWith(policy.Options{Mesh: true, EdgeIdentities: []string{"edge-gateway", "partner-gateway"}}, dir); set == nil || len(diags) > 0 {
		t.Errorf("an allowed identity: %v; want a valid policy", diags)
	}
	for _, tc := range []struct {
		name, policy, want string
	}{
		{"mesh block", edgeMeshPolicy,
			file + `:4: proxy group "edge": mesh identity "edge-gateway" is not one the operator allows edge groups (mesh.edge-identities: partner-gateway); use one of them in its mesh block`},
		{"the group's name", strings.Replace(edgeMeshPolicy, "mesh:\n  service: edge-gateway\n", "", 1),
			file + `:3: proxy group "edge": mesh identity "edge" is not one the operator allows edge groups (mesh.edge-identities: partner-gateway); use one of them in its mesh block`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(file, []byte(tc.policy), 0o644); err != nil {
				t.Fatal(err)
			}
			set, diags := policy.LoadWith(policy.Options{Mesh: true, EdgeIdentities: []string{"partner-gateway"}}, dir)
			var got []string
			for _, d := range diags {
				got = append(got, d.String())
			}
			if set != nil || !slices.Equal(got, []string{tc.want}) {
				t.Errorf("got set %v, %q; want no set and %q", set != nil, got, tc.want)
			}
		})
	}
}

// A route through the mesh to a service with a Service policy warns at
// the route which of its settings do not apply there; a Service with none
// of them, or reached directly, gives no such warning.
func TestMeshRouteServiceSettingsWarn(t *testing.T) {
	doc := edgeMeshPolicy + `---
apiVersion: switchyard.io/v1
kind: Service
name: api
protocol: http2
mesh:
  timeout: 2s
  split:
    - { service: api, weight: 90 }
    - { service: api-v2, weight: 10 }
---
apiVersion: switchyard.io/v1
kind: Service
name: web
protocol: http2
`
	_, diags := policy.Parse(map[string][]byte{"a.yaml": []byte(doc)})
	var got []string
	for _, d := range diags {
		got = append(got, d.String())
	}
	want := []string{`a.yaml:12: warning: route reaches service "api" through the mesh, where the settings protocol, mesh timeout, mesh split of its Service policy (a.yaml:19) have no effect: what its sidecars serve decides the protocol, and the route's own timeout, retries and split apply`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// ParseWith accepts exactly what LoadWith accepts from the same bytes, and
// returns the same set: the control plane reloads the copy of the policy
// it kept in its state directory through it. Relative certificate paths
// resolve against the directory in the file's name.
func TestParseWithMatchesLoadWith(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, "c", "edge.example.com")
	writeFile(t, filepath.Join(dir, "c.yaml"), certDoc("c.crt", "c.key", ""))
	writeFile(t, filepath.Join(dir, "edge.yaml"), []byte(replaceName(minimalGroup, "edge")))
	writeFile(t, filepath.Join(dir, "mesh.yaml"), []byte(strings.Replace(edgeMeshPolicy, "name: edge", "name: gateway", 1)))
	files := map[string][]byte{}
	for _, name := range policy.FilesIn(dir) {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	meshOn := policy.Options{Mesh: true}
	want, diags := policy.LoadWith(meshOn, dir)
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	got, diags := policy.ParseWith(meshOn, files)
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(policy.Set{})); diff != "" {
		t.Errorf("ParseWith vs LoadWith (-want +got):\n%s", diff)
	}
	if _, diags := policy.ParseWith(policy.Options{}, files); !diags.HasErrors() {
		t.Error("ParseWith without the mesh accepted a route through the mesh; want LoadWith's error")
	}
	if _, diags := policy.ParseWith(policy.Options{Mesh: true, EdgeIdentities: []string{"other"}}, files); !diags.HasErrors() {
		t.Error("ParseWith accepted a mesh identity mesh.edge-identities does not list; want LoadWith's error")
	}
	certOnly := filepath.Join(dir, "c.yaml")
	_, diags = policy.ParseWith(policy.Options{}, map[string][]byte{certOnly: files[certOnly]})
	if err := diags.Err(); err == nil || !strings.Contains(err.Error(), "no proxy group") {
		t.Errorf("ParseWith of a policy without proxy groups: %v; want LoadWith's no-proxy-group error", err)
	}
}
