package safefile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/switchyard-io/switchyard/internal/safefile"
)

// Writing tells a file being written (held open by a writer) from one that
// is not, so a reader can wait for the writer to finish.
func TestWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte("a: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if w, err := safefile.Writing(path); w || err != nil {
		t.Fatalf("Writing(closed file) = %v, %v; want false, nil", w, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if w, err := safefile.Writing(path); !w || err != nil {
		t.Errorf("Writing(file open for writing) = %v, %v; want true, nil", w, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if w, err := safefile.Writing(path); w || err != nil {
		t.Errorf("Writing(file closed again) = %v, %v; want false, nil", w, err)
	}
}
