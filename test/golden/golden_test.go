package golden

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeT records what a Checker does to its test.
type fakeT struct {
	cleanups []func()
	failed   bool
	errors   []string
	logs     []string
}

func (f *fakeT) Helper()                 {}
func (f *fakeT) Cleanup(fn func())       { f.cleanups = append(f.cleanups, fn) }
func (f *fakeT) Failed() bool            { return f.failed }
func (f *fakeT) Logf(s string, a ...any) { f.logs = append(f.logs, fmt.Sprintf(s, a...)) }
func (f *fakeT) Errorf(s string, a ...any) {
	f.failed = true
	f.errors = append(f.errors, fmt.Sprintf(s, a...))
}

// end runs the test's cleanups, as the testing package does when it ends.
func (f *fakeT) end() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// goldenDir writes case files: one input, two outputs, a leftover output,
// and a fuzz corpus file the globs do not cover.
func goldenDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{
		"a.in.yaml":                  "in\n",
		"a.clusters.yaml":            "clusters\n",
		"a.routes.yaml":              "routes\n",
		"gone.routes.yaml":           "a case removed long ago\n",
		"fuzz/FuzzX/0123456789abcde": "go test fuzz v1\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A golden file that no test compared or read fails the test that owns the
// Checker, named; files compared, read, or outside the globs do not.
func TestCheckerFailsOnLeftover(t *testing.T) {
	dir := goldenDir(t)
	ft := &fakeT{}
	c := New(ft, false, filepath.Join(dir, "*"))
	c.Read(filepath.Join(dir, "a.in.yaml"))
	c.Compare(t, filepath.Join(dir, "a.clusters.yaml"), []byte("clusters\n"))
	c.Compare(t, filepath.Join(dir, "a.routes.yaml"), []byte("routes\n"))
	ft.end()
	want := filepath.Join(dir, "gone.routes.yaml")
	if len(ft.errors) != 1 || !strings.Contains(ft.errors[0], want) {
		t.Fatalf("got errors %q; want one naming %s", ft.errors, want)
	}
	left, err := c.Leftovers()
	if err != nil || !slices.Equal(left, []string{want}) {
		t.Fatalf("Leftovers() = %v, %v; want [%s]", left, err, want)
	}
}

// With -update the leftover still fails: a regenerated golden set must not
// keep a file no test writes.
func TestCheckerFailsOnLeftoverWithUpdate(t *testing.T) {
	dir := goldenDir(t)
	ft := &fakeT{}
	c := New(ft, true, filepath.Join(dir, "*"))
	c.Read(filepath.Join(dir, "a.in.yaml"))
	c.Compare(t, filepath.Join(dir, "a.clusters.yaml"), []byte("clusters v2\n"))
	c.Compare(t, filepath.Join(dir, "a.routes.yaml"), []byte("routes\n"))
	ft.end()
	if len(ft.errors) != 1 || !strings.Contains(ft.errors[0], "gone.routes.yaml") {
		t.Fatalf("got errors %q; want one naming gone.routes.yaml", ft.errors)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a.clusters.yaml")); string(b) != "clusters v2\n" {
		t.Fatalf("-update wrote %q; want the new output", b)
	}
}

// When every file is used there is nothing to report.
func TestCheckerPassesWhenAllRead(t *testing.T) {
	dir := goldenDir(t)
	ft := &fakeT{}
	c := New(ft, false, filepath.Join(dir, "*"))
	for _, name := range []string{"a.in.yaml", "gone.routes.yaml"} {
		c.Read(filepath.Join(dir, name))
	}
	c.Compare(t, filepath.Join(dir, "a.clusters.yaml"), []byte("clusters\n"))
	// A relative path names the same file.
	rel, err := filepath.Rel(mustGetwd(t), filepath.Join(dir, "a.routes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c.Compare(t, rel, []byte("routes\n"))
	ft.end()
	if len(ft.errors) != 0 {
		t.Fatalf("got errors %q; want none", ft.errors)
	}
}

// A test that failed already, or ran a subset of its cases, is not checked:
// its cases may have stopped before comparing.
func TestCheckerSkipsFailedTest(t *testing.T) {
	dir := goldenDir(t)
	ft := &fakeT{}
	New(ft, false, filepath.Join(dir, "*"))
	ft.failed = true
	ft.end()
	if len(ft.errors) != 0 {
		t.Fatalf("got errors %q; want none added to a failed test", ft.errors)
	}
}

func TestSubsetRun(t *testing.T) {
	for _, c := range []struct {
		run, skip string
		want      bool
	}{
		{"", "", false},
		{"Golden", "", false},
		{"^TestGolden$", "", false},
		{"TestGolden/edge", "", true},
		{"Golden/", "", true},
		{"", "TestGolden/edge", true},
	} {
		if got := subsetRun(c.run, c.skip); got != c.want {
			t.Errorf("subsetRun(%q, %q) = %v; want %v", c.run, c.skip, got, c.want)
		}
	}
}

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}
