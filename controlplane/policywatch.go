package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/switchyard-io/switchyard/policy"
)

// policySettle is how long the policy files must be quiet before a reload:
// editors and `cp` write a file in several steps, and certificate rotation
// replaces a cert and its key one after the other.
const policySettle = 100 * time.Millisecond

// policyResync re-reads the policy periodically in case a file-system event
// was missed (a directory created after start, a network file system).
const policyResync = 5 * time.Second

// watchPolicy loads the policy set and reloads it whenever a policy,
// certificate or key file changes. A valid set replaces the current one; an
// invalid one is logged with file and line, counted, and ignored, so the
// last good policy keeps serving.
func (s *Server) watchPolicy(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer fw.Close()
	watched := map[string]bool{}
	lastErr := ""
	// The files as they were when last read: the periodic re-read skips
	// parsing (a large policy takes a while) while they are unchanged.
	var dirs []string
	lastPrint := ""
	reload := func() {
		lastPrint = fingerprint(dirs)
		set, diags := policy.Load(s.cfg.PolicyPaths...)
		dirs = s.policyDirs(set)
		for _, dir := range dirs {
			if !watched[dir] {
				if err := fw.Add(dir); err == nil {
					watched[dir] = true
				}
			}
		}
		// policy.Load holds every rule (an empty policy is an error
		// there), so serve accepts exactly what validate accepts.
		if diags.HasErrors() {
			msg := diags.Errors().Err().Error()
			if msg == lastErr {
				return // the same mistake, already reported
			}
			lastErr = msg
			s.metrics.policyReloads.WithLabelValues("error").Inc()
			s.mu.Lock()
			serving := s.policy != nil
			s.mu.Unlock()
			for _, d := range diags.Errors() {
				s.log.Error("invalid policy", "error", d.String())
			}
			if serving {
				s.log.Error("policy rejected; the last good policy keeps serving", "errors", len(diags.Errors()))
			} else {
				s.log.Error("no valid policy yet; not ready until the errors are fixed", "errors", len(diags.Errors()))
			}
			return
		}
		lastErr = ""
		current, latest := s.policies()
		if latest != nil && reflect.DeepEqual(latest, set) {
			return
		}
		// The new policy waits (as pending) until the registry has synced
		// the services it routes to, at most coverWait; meanwhile the
		// current one keeps serving, so both sets of services are watched.
		s.mu.Lock()
		first := current == nil
		s.pending = set
		s.pendingAt = time.Now()
		s.mu.Unlock()
		s.updateWant()
		time.AfterFunc(coverWait, func() { notify(s.changed) })
		s.metrics.policyReloads.WithLabelValues("ok").Inc()
		for _, d := range diags.Warnings() {
			s.log.Warn(d.String())
		}
		if first {
			s.log.Info("policy loaded", "groups", len(set.Groups), "certificates", len(set.Certificates))
		} else {
			s.log.Info("policy reloaded", "groups", len(set.Groups), "certificates", len(set.Certificates))
		}
		notify(s.changed)
	}
	reload()

	settle := time.NewTimer(time.Hour)
	settle.Stop()
	resync := time.NewTicker(policyResync)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return nil
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			settle.Reset(policySettle)
		case err, ok := <-fw.Errors:
			if !ok {
				return nil
			}
			s.log.Warn("policy file watch error; periodic re-reads continue", "err", err)
		case <-settle.C:
			reload()
		case <-resync.C:
			if fingerprint(dirs) != lastPrint {
				reload()
			}
		}
	}
}

// policyDirs lists the directories to watch: each policy path (or its
// directory, for a file) and the directories of every certificate file.
// Directories, not files, because editors and certificate tools replace
// files by renaming a new one over the old.
func (s *Server) policyDirs(set *policy.Set) []string {
	dirs := map[string]bool{}
	for _, p := range s.cfg.PolicyPaths {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			dirs[filepath.Clean(p)] = true
		} else {
			dirs[filepath.Dir(p)] = true
		}
	}
	if set != nil {
		for _, f := range set.Files() {
			dirs[filepath.Dir(f)] = true
		}
	}
	out := make([]string, 0, len(dirs))
	for d := range dirs {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// fingerprint summarises the files in dirs: each one's path, size and
// modification time. Any edit, new file or removal changes it.
func fingerprint(dirs []string) string {
	var b strings.Builder
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", dir, err)
			continue
		}
		for _, e := range entries {
			path := filepath.Join(dir, e.Name())
			// Stat, not Lstat: a symlinked file edited in place changes
			// its target, not the link.
			fi, err := os.Stat(path)
			if err != nil {
				fmt.Fprintf(&b, "%s: %v\n", path, err)
				continue
			}
			fmt.Fprintf(&b, "%s %d %d %v\n", path, fi.Size(), fi.ModTime().UnixNano(), fi.Mode())
		}
	}
	return b.String()
}
