// Package golden compares test output with golden files, which `make
// golden` (go test -update) rewrites, and fails on golden files no test
// reads any more.
package golden

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Compare checks got against the file at path, or writes got there when
// update is set. Prefer a Checker, which also notices leftover files.
func Compare(t testing.TB, path string, got []byte, update bool) {
	t.Helper()
	if update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run `make golden` to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s is stale; run `make golden` and review the diff (-want +got):\n%s", path, diff)
	}
}

// T is what a Checker needs of the test that owns it; *testing.T has it.
type T interface {
	Helper()
	Cleanup(func())
	Failed() bool
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
}

// Checker compares golden files like Compare and records which files a
// test used. When the test that made it ends, every file matching its
// globs that was neither compared nor marked as read with Read fails that
// test: a golden file no test reads any more (a removed case, a renamed
// output type) is a leftover to delete, not something to keep passing.
//
// The check runs only when the whole test ran: not when -run selects some
// of its subtests or -skip leaves some out, and not when the test already
// failed (a case that stopped early compared nothing).
type Checker struct {
	update bool
	globs  []string

	mu   sync.Mutex
	used map[string]bool // absolute paths
}

// New returns a Checker for the files matching globs (filepath.Glob
// patterns; directories they match are ignored). Make it in the top-level
// test, and compare in its subtests: the check runs at t's cleanup, after
// every subtest.
func New(t T, update bool, globs ...string) *Checker {
	t.Helper()
	c := &Checker{update: update, globs: globs, used: map[string]bool{}}
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		if run, skip := flagValue("test.run"), flagValue("test.skip"); subsetRun(run, skip) {
			t.Logf("golden: not looking for leftover files: -run %q -skip %q may leave cases out", run, skip)
			return
		}
		left, err := c.Leftovers()
		if err != nil {
			t.Errorf("golden: %v", err)
			return
		}
		for _, p := range left {
			t.Errorf("golden: %s was not read by any test: delete it (git rm), or make a test read it", p)
		}
	})
	return c
}

// Compare is the package's Compare, recording path as used.
func (c *Checker) Compare(t testing.TB, path string, got []byte) {
	t.Helper()
	c.Read(path)
	Compare(t, path, got, c.update)
}

// Read marks a file the test read as input (a case's input file), so it is
// not a leftover.
func (c *Checker) Read(path string) {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.used[abs] = true
}

// Leftovers lists the regular files matching the Checker's globs that were
// neither compared nor read, sorted.
func (c *Checker) Leftovers() ([]string, error) {
	var left []string
	for _, g := range c.globs {
		matches, err := filepath.Glob(g)
		if err != nil {
			return nil, err
		}
		for _, m := range matches {
			fi, err := os.Stat(m)
			if err != nil {
				return nil, err
			}
			if !fi.Mode().IsRegular() {
				continue
			}
			abs, err := filepath.Abs(m)
			if err != nil {
				return nil, err
			}
			c.mu.Lock()
			used := c.used[abs]
			c.mu.Unlock()
			if !used && !slices.Contains(left, m) {
				left = append(left, m)
			}
		}
	}
	slices.Sort(left)
	return left, nil
}

func flagValue(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}

// subsetRun reports whether -run and -skip may have left some subtests of a
// test that ran out: a -run pattern with a subtest part (a "/"), or any
// -skip.
func subsetRun(run, skip string) bool {
	return strings.Contains(run, "/") || skip != ""
}
