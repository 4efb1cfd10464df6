package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/switchyard-io/switchyard/internal/safefile"
	"github.com/switchyard-io/switchyard/policy"
)

// policyStateFile is the name of the served policy's copy in the state
// directory.
const policyStateFile = "policy-snapshot.json"

// policyStateMaxBytes bounds the saved policy, written and read: a policy
// file may hold 4 MiB, and the copy is base64 (a third larger). A larger
// policy is not saved (the log says so), and the previous copy stays.
const policyStateMaxBytes = 64 << 20

// policyStateVersion is the saved policy's format; a start ignores
// another.
const policyStateVersion = 1

// savedPolicy is the file: the policy files each served proxy group was
// last defined by.
type savedPolicy struct {
	Version int              `json:"version"`
	SavedAt time.Time        `json:"savedAt"`
	Sets    []savedPolicySet `json:"sets"`
}

// savedPolicySet is the policy files of one valid policy set, as they
// were read, and the groups served from it: the set being served, and each
// older one that still defines a group retained after leaving the policy.
type savedPolicySet struct {
	Groups []string          `json:"groups"`
	Files  map[string][]byte `json:"files"` // policy file name -> its bytes
}

// policySource is the policy files a valid set was loaded from (name ->
// bytes, as read). Immutable; compared by pointer.
type policySource struct{ files map[string][]byte }

// policyKeeper keeps in the state directory what the served proxy groups
// were built from, so that a restart serves again the groups that left the
// policy while Envoys used them (restorePolicy): for each group, the policy
// files of the last valid set that defined it. Only policy files are
// copied: the certificate, key and CA files they name are read again, at
// a restart, from where the policy names them, so no private key is
// written anywhere new. The watcher records each valid set's files
// (capture), the rebuild what it served (built); writes happen off both,
// the latest copy winning.
type policyKeeper struct {
	path string
	opts policy.Options
	next chan []byte // capacity 1: the latest unsaved copy

	mu sync.Mutex
	// loaded holds the files of the set served and of the latest loaded
	// (pending until promoted); latest is that one.
	loaded map[*policy.Set]*policySource
	latest *policy.Set
	// current and served are the last build's policy set and what it
	// served (retained groups included).
	current, served *policy.Set
	// from is each served group's source, as last queued for saving.
	from map[string]*policySource
}

func newPolicyKeeper(dir string, opts policy.Options) *policyKeeper {
	return &policyKeeper{path: filepath.Join(dir, policyStateFile), opts: opts, next: make(chan []byte, 1),
		loaded: map[*policy.Set]*policySource{}, from: map[string]*policySource{}}
}

// capture records the policy files set was loaded from (paths are the
// policy paths given to Load). The files are read again after Load, so
// they are kept only if they load to the very same set: an edit that
// raced the load is not saved in its place (the reload that edit causes
// captures it).
func (k *policyKeeper) capture(paths []string, set *policy.Set) error {
	k.mu.Lock()
	_, have := k.loaded[set]
	k.mu.Unlock()
	if have {
		return nil
	}
	files := map[string][]byte{}
	for _, name := range policy.FilesIn(paths...) {
		b, err := safefile.Read(name, safefile.PolicyLimit)
		if err != nil {
			return nil // changed since the load: its reload captures it
		}
		files[name] = b
	}
	again, diags := policy.ParseWith(k.opts, files)
	if diags.HasErrors() || !reflect.DeepEqual(again, set) {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for s := range k.loaded {
		if s != k.current {
			delete(k.loaded, s)
		}
	}
	k.loaded[set], k.latest = &policySource{files: files}, set
	if set == k.current {
		return k.update()
	}
	return nil
}

// built records what a build served: current is the policy set, served
// the groups served (current's and the retained ones).
func (k *policyKeeper) built(current, served *policy.Set) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if current == k.current && served == k.served {
		return nil
	}
	for s := range k.loaded {
		if s != current && s != k.latest {
			delete(k.loaded, s)
		}
	}
	k.current, k.served = current, served
	return k.update()
}

// update works out each served group's source and, when that changed,
// queues the copy to be written. A group whose source is not known is
// left out (its set's files changed while it loaded, and the set was
// replaced before a reload could capture it). Called with k.mu held.
func (k *policyKeeper) update() error {
	src := k.loaded[k.current]
	if src == nil || k.served == nil {
		return nil // not known yet: capture calls again when it is
	}
	from := make(map[string]*policySource, len(k.served.Groups))
	for _, g := range k.served.Groups {
		if _, ok := k.current.Group(g.Name); ok {
			from[g.Name] = src
		} else if s := k.from[g.Name]; s != nil {
			from[g.Name] = s
		}
	}
	if maps.Equal(from, k.from) {
		return nil
	}
	k.from = from
	b, err := encodePolicy(from)
	if err != nil {
		return err
	}
	if len(b) > policyStateMaxBytes {
		return fmt.Errorf("the policy takes %s, more than the %s kept in state.dir: not saved, the previous copy stays", safefile.Size(int64(len(b))), safefile.Size(policyStateMaxBytes))
	}
	for {
		select {
		case k.next <- b:
			return nil
		default:
		}
		select {
		case <-k.next:
		default:
		}
	}
}

// encodePolicy is the saved policy's bytes: one entry per source, in the
// order of their first group, so the same served policy saves the same
// bytes (but for the time).
func encodePolicy(from map[string]*policySource) ([]byte, error) {
	groups := map[*policySource][]string{}
	for _, name := range slices.Sorted(maps.Keys(from)) {
		groups[from[name]] = append(groups[from[name]], name)
	}
	out := savedPolicy{Version: policyStateVersion, SavedAt: time.Now().UTC()}
	for src, names := range groups {
		out.Sets = append(out.Sets, savedPolicySet{Groups: names, Files: src.files})
	}
	slices.SortFunc(out.Sets, func(a, b savedPolicySet) int { return strings.Compare(a.Groups[0], b.Groups[0]) })
	return json.Marshal(out)
}

// policyWriteRetry is how long a copy that failed to write (a full disk)
// waits before the next try, unless a newer copy comes first.
const policyWriteRetry = 30 * time.Second

// run writes queued copies until ctx ends, then the last one. A copy that
// fails to write is tried again: update queues a copy only when what is
// served changes, so dropping it would leave the previous one in place
// indefinitely.
func (k *policyKeeper) run(ctx context.Context, logError func(error)) {
	var pending []byte // the newest copy not written yet
	write := func() {
		if err := writeState(k.path, pending); err != nil {
			logError(err)
			return
		}
		pending = nil
	}
	for {
		var retry <-chan time.Time
		if pending != nil {
			retry = time.After(policyWriteRetry)
		}
		select {
		case <-ctx.Done():
			select {
			case pending = <-k.next:
			default:
			}
			if pending != nil {
				write()
			}
			return
		case pending = <-k.next:
		case <-retry:
		}
		write()
	}
}

// load reads the saved policy (os.ErrNotExist when there is none).
func (k *policyKeeper) load() ([]savedPolicySet, error) {
	b, err := safefile.Read(k.path, policyStateMaxBytes)
	if err != nil {
		return nil, err
	}
	var saved savedPolicy
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, fmt.Errorf("%s: %w", k.path, err)
	}
	if saved.Version != policyStateVersion {
		return nil, fmt.Errorf("%s: format %d, not %d (saved by another release of Switchyard)", k.path, saved.Version, policyStateVersion)
	}
	return saved.Sets, nil
}

// restorePolicy serves again what was served before a restart: the
// publisher's first build compares the policy with the groups saved in
// state.dir, as it compares each new policy with the last build's groups,
// so a group the policy no longer defines is retained while its Envoys use
// it. They get the linger, from the start, to reconnect; a group none
// comes back to is then withdrawn. A group the policy defines always takes
// the policy's definition. A saved set that no longer loads (a file it
// names is gone, or another release reads the policy differently) is
// logged and ignored: it never stops the start.
func (s *Server) restorePolicy() {
	k := s.keeper
	sets, err := k.load()
	switch {
	case errors.Is(err, os.ErrNotExist):
		return
	case err != nil:
		s.log.Error("the policy saved in state.dir is not usable; groups removed from the policy before the restart are not restored", "err", err)
		return
	}
	restored := &policy.Set{}
	var names []string
	for _, saved := range sets {
		set, diags := policy.ParseWith(k.opts, saved.Files)
		if diags.HasErrors() {
			errs := diags.Errors()
			s.log.Error("a policy saved in state.dir no longer loads; the proxy groups served from it are not restored",
				"path", k.path, "groups", saved.Groups, "errors", len(errs), "first_error", errs[0].String())
			continue
		}
		src := &policySource{files: saved.Files}
		var keep []string
		for _, name := range saved.Groups {
			if _, ok := set.Group(name); ok && !slices.Contains(names, name) {
				keep = append(keep, name)
				k.from[name] = src
			}
		}
		names = append(names, keep...)
		restored = restored.Keep(set, keep)
	}
	if len(names) == 0 {
		return
	}
	slices.Sort(names)
	s.pub.restore(restored)
	s.in.restoreCover(restored)
	s.px.awaitReconnect(names)
	s.log.Info("restored from state.dir the proxy groups served before the restart; those the policy no longer defines are served while their Envoys reconnect",
		"groups", names, "linger", s.px.linger)
}

// restore seeds the publisher with the groups served before a restart
// (restorePolicy), as if a build had served them.
func (p *publisher) restore(set *policy.Set) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastServed = set
	p.restored = make(map[string]bool, len(set.Groups))
	for _, g := range set.Groups {
		p.restored[g.Name] = true
	}
}

// awaitReconnect gives the Envoys of groups served before a restart the
// linger to come back: until then inUse reports the groups in use, as if
// their last Envoy had just left, and a rebuild after it withdraws those
// no Envoy came back to (if the policy no longer defines them).
func (x *proxies) awaitReconnect(groups []string) {
	now := time.Now()
	x.mu.Lock()
	for _, g := range groups {
		if x.groupStreams[g] == 0 {
			x.lastLeft[g] = now
		}
	}
	x.mu.Unlock()
	time.AfterFunc(x.linger, func() { notify(x.changed) })
}
