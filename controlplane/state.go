package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/switchyard-io/switchyard/internal/safefile"
	"github.com/switchyard-io/switchyard/registry"
)

// stateFile is the name of Consul's last view in the state directory.
const stateFile = "consul-snapshot.json"

// stateMaxBytes bounds the state file read at start: 5,000 services of 10
// instances take about 10 MB.
const stateMaxBytes = 256 << 20

// DefaultStateRestoreAfter is how long a start waits for Consul before it
// serves the saved view instead; DefaultStateMaxAge is the oldest view it
// serves.
const (
	DefaultStateRestoreAfter = 10 * time.Second
	DefaultStateMaxAge       = 72 * time.Hour
)

// stateStore keeps Consul's last view (registry.Snapshot: names,
// addresses, ports, tags, meta and health; no token, no key) in a file, so
// that a Switchyard started while Consul is unreachable serves its Envoys
// the last known endpoints instead of nothing. Writes happen off the
// publishing path, at most once per writeEvery, the latest view winning.
type stateStore struct {
	path       string
	origin     string // which Consul the views are of (Saved.Origin)
	writeEvery time.Duration
	next       chan *registry.Snapshot // capacity 1: the latest unsaved view
}

func newStateStore(dir, origin string) (*stateStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state.dir: %w", err)
	}
	return &stateStore{path: filepath.Join(dir, stateFile), origin: origin, writeEvery: time.Second, next: make(chan *registry.Snapshot, 1)}, nil
}

// save queues snap to be written; a view not yet written is replaced.
func (st *stateStore) save(snap *registry.Snapshot) {
	for {
		select {
		case st.next <- snap:
			return
		default:
		}
		select {
		case <-st.next:
		default:
		}
	}
}

// run writes queued views until ctx ends, then writes the last one.
func (st *stateStore) run(ctx context.Context, logError func(error)) {
	for {
		select {
		case <-ctx.Done():
			select {
			case snap := <-st.next:
				if err := st.write(snap); err != nil {
					logError(err)
				}
			default:
			}
			return
		case snap := <-st.next:
			if err := st.write(snap); err != nil {
				logError(err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(st.writeEvery):
		}
	}
}

// write replaces the state file with snap.
func (st *stateStore) write(snap *registry.Snapshot) error {
	b, err := snap.Save(time.Now(), st.origin)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return writeState(st.path, b)
}

// writeState replaces a file of the state directory atomically (a new
// file renamed over the old), readable by Switchyard's user only.
func writeState(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a rename: already gone
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("state: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("state: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// load reads the saved view (os.ErrNotExist when there is none), and
// refuses one of another Consul or older than maxAge.
func (st *stateStore) load(maxAge time.Duration) (*registry.Snapshot, time.Time, error) {
	b, err := safefile.Read(st.path, stateMaxBytes)
	if err != nil {
		return nil, time.Time{}, err
	}
	snap, saved, err := registry.LoadSnapshot(b)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("%s: %w", st.path, err)
	}
	if saved.Origin != st.origin {
		return nil, time.Time{}, fmt.Errorf("%s is a view of another Consul (%q, not %q); not served", st.path, saved.Origin, st.origin)
	}
	if age := time.Since(saved.At); age > maxAge {
		return nil, time.Time{}, fmt.Errorf("%s was saved %s ago, more than state.max-age %s; not served", st.path, age.Round(time.Second), maxAge)
	}
	return snap, saved.At, nil
}
