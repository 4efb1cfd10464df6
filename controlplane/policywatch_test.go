package controlplane

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The periodic re-read parses the policy again only when fingerprint
// changes: it must change on every kind of edit, and only then.
func TestFingerprintSeesEveryEdit(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("edge.yaml", "a: 1\n")
	dirs := []string{dir}
	last := fingerprint(dirs)
	if again := fingerprint(dirs); again != last {
		t.Fatalf("fingerprint changed without an edit:\n%s\n%s", last, again)
	}
	step := func(what string, edit func()) {
		t.Helper()
		edit()
		now := fingerprint(dirs)
		if now == last {
			t.Errorf("%s: fingerprint unchanged", what)
		}
		last = now
	}
	step("content of another size", func() { write("edge.yaml", "a: 12\n") })
	step("same size, new modification time", func() {
		write("edge.yaml", "a: 34\n")
		later := time.Now().Add(time.Minute)
		if err := os.Chtimes(filepath.Join(dir, "edge.yaml"), later, later); err != nil {
			t.Fatal(err)
		}
	})
	step("a new file", func() { write("more.yaml", "b: 1\n") })
	step("a removed file", func() {
		if err := os.Remove(filepath.Join(dir, "more.yaml")); err != nil {
			t.Fatal(err)
		}
	})
	step("a symlinked file edited where it lives", func() {
		elsewhere := t.TempDir()
		target := filepath.Join(elsewhere, "shared.yaml")
		if err := os.WriteFile(target, []byte("c: 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(dir, "shared.yaml")); err != nil {
			t.Fatal(err)
		}
		last = fingerprint(dirs)
		if err := os.WriteFile(target, []byte("c: 12\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	step("a removed directory", func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	})
}
