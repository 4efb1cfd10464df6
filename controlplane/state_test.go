package controlplane

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-io/switchyard/registry"
)

// A saved view loads back only for the same Consul and while it is
// younger than the maximum age; the file is readable by its owner only.
func TestStateStoreLoadRefusesForeignAndOldViews(t *testing.T) {
	dir := t.TempDir()
	st, err := newStateStore(dir, "http://10.0.0.1:8500 datacenter=dc1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.load(time.Hour); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("load with no file: %v; want os.ErrNotExist", err)
	}
	snap := webSnapshot(registry.Healthy)
	if err := st.write(snap); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(st.path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v (%v); want 0600", fi.Mode().Perm(), err)
	}
	got, _, err := st.load(time.Hour)
	if err != nil || !got.Equal(snap) {
		t.Fatalf("load: %v (equal %v); want the view written", err, got.Equal(snap))
	}
	if _, _, err := st.load(time.Nanosecond); err == nil || !strings.Contains(err.Error(), "state.max-age") {
		t.Errorf("an older view than state.max-age: %v; want refused, naming state.max-age", err)
	}
	other, err := newStateStore(dir, "http://10.0.0.2:8500 datacenter=dc2")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.load(time.Hour); err == nil || !strings.Contains(err.Error(), "another Consul") {
		t.Errorf("a view of another Consul: %v; want refused", err)
	}
}
