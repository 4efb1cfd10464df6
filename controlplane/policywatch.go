package controlplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/switchyard-io/switchyard/internal/safefile"
	"github.com/switchyard-io/switchyard/policy"
)

// policySettle is how long the policy files must be quiet before a reload:
// editors and `cp` write a file in several steps, and certificate rotation
// replaces a cert and its key one after the other. A reload also waits until
// the files' sizes and times are the same at two looks policySettle apart:
// the first at the last file event, the second when the timer fires.
const policySettle = 100 * time.Millisecond

// policyWriteWait is how long a reload waits for a policy or certificate
// file that some process holds open for writing: a file rewritten in place
// is not loaded half-written, even if its writer pauses. A writer that keeps
// a file open for longer is taken to be done.
const policyWriteWait = time.Minute

// policyResync re-reads the policy periodically in case a file-system event
// was missed (a network file system, a watch that could not be set). A var
// so that tests can prove the watch alone picks up a change.
var policyResync = 5 * time.Second

// policyWatcher is the state of watchPolicy's loop; one goroutine uses it.
type policyWatcher struct {
	s     *Server
	paths []string
	fw    *fsnotify.Watcher
	// watched are the directories watched, with their identity when the
	// watch was added: a directory deleted and created again is a new one,
	// whose watch must be added again.
	watched map[string]os.FileInfo
	dirs    []string // the directories whose files make up the policy
	files   []string // the last valid set's files (policies, certificates)

	lastErr   string // the last invalid set's errors, already reported
	lastPrint string // fingerprint(dirs) when last loaded
	gatePrint string // fingerprint(dirs) at the previous settle check
	busySince time.Time
	leaseOff  bool // the kernel will not tell whether a file is being written
	// requested: Server.Reload asked for this reload (SIGHUP), so its
	// outcome is logged even when nothing changed.
	requested bool
}

// watchPolicy loads the policy set and reloads it whenever a policy,
// certificate or key file changes. A valid set replaces the current one; an
// invalid one is logged with file and line, counted, and ignored, so the
// last good policy keeps serving. A file still being written is not loaded
// until its writer closes it (see settled).
func (s *Server) watchPolicy(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer fw.Close()
	w := &policyWatcher{s: s, paths: s.cfg.PolicyPaths, fw: fw, watched: map[string]os.FileInfo{}}
	w.dirs = policyDirs(w.paths, nil)
	w.watch()
	w.gatePrint = fingerprint(w.dirs)

	settle := time.NewTimer(0) // the first load goes through the same checks
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
			if ev.Op == fsnotify.Chmod || !w.relevant(ev.Name) {
				continue
			}
			// The first look: a file replaced by a rename (as deploy
			// tools and most editors save) is then reloaded one
			// policySettle after it appeared, not two.
			w.gatePrint = fingerprint(w.dirs)
			settle.Reset(policySettle)
		case err, ok := <-fw.Errors:
			if !ok {
				return nil
			}
			s.log.Warn("policy file watch error; periodic re-reads continue", "err", err)
		case <-settle.C:
			if w.settled() {
				w.reload()
			} else {
				settle.Reset(policySettle)
			}
		case <-s.reload:
			// As if every file had changed: the same errors are reported
			// again, and an unchanged policy says so.
			w.lastErr, w.requested = "", true
			settle.Reset(0)
		case <-resync.C:
			w.watch()
			// While the policy is invalid, re-read it anyway: the fix may
			// be in a file no watched directory holds yet.
			if w.lastErr != "" || fingerprint(w.dirs) != w.lastPrint {
				settle.Reset(policySettle)
			}
		}
	}
}

// settled reports whether the policy files look complete: unchanged since
// the previous look (policySettle ago) and open for writing by no process.
// A file rewritten in place can be valid when half written (the first
// routes of a table), so a quiet pause is not enough: while the kernel says
// a writer holds a file open, the reload waits, up to policyWriteWait.
func (w *policyWatcher) settled() bool {
	if print := fingerprint(w.dirs); print != w.gatePrint {
		w.gatePrint = print
		return false
	}
	file := w.beingWritten()
	if file == "" {
		w.busySince = time.Time{}
		return true
	}
	if w.busySince.IsZero() {
		w.busySince = time.Now()
		w.s.log.Info("policy file is open for writing; waiting for its writer to close it", "file", file)
	}
	if waited := time.Since(w.busySince); waited >= policyWriteWait {
		w.s.log.Warn("policy file is still open for writing; loading it as it is", "file", file, "waited", waited.Round(time.Second))
		w.busySince = time.Time{}
		return true
	}
	return false
}

// beingWritten returns a policy or certificate file that a process has open
// for writing, or "".
func (w *policyWatcher) beingWritten() string {
	if w.leaseOff {
		return ""
	}
	for _, f := range append(policy.FilesIn(w.paths...), w.files...) {
		writing, err := safefile.Writing(f)
		if writing {
			return f
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, errors.ErrUnsupported) {
			// Not the file's owner, or a file system without leases:
			// only the settle time guards against half-written files.
			w.s.log.Debug("cannot tell whether policy files are being written; relying on the settle time", "err", err)
			w.leaseOff = true
			return ""
		}
	}
	return ""
}

// reload loads the policy set and, when valid and new, makes it pending.
func (w *policyWatcher) reload() {
	s := w.s
	requested := w.requested
	w.requested = false
	// Watch first, so that a change made while Load reads is seen.
	w.watch()
	w.lastPrint = fingerprint(w.dirs)
	w.gatePrint = w.lastPrint
	set, diags := policy.LoadWith(s.policyOptions(), w.paths...)
	if set != nil {
		w.files = set.Files()
	}
	w.dirs = policyDirs(w.paths, w.files)
	w.watch()
	// policy.Load holds every rule (an empty policy is an error there), so
	// serve accepts exactly what validate accepts.
	if diags.HasErrors() {
		msg := diags.Errors().Err().Error()
		if msg == w.lastErr {
			return // the same mistake, already reported
		}
		w.lastErr = msg
		current, _ := s.in.policies()
		serving := current != nil
		for _, d := range diags.Errors() {
			s.log.Error("invalid policy", "error", d.String())
		}
		if serving {
			s.log.Error("policy rejected; the last good policy keeps serving", "errors", len(diags.Errors()))
		} else {
			s.log.Error("no valid policy yet; not ready until the errors are fixed", "errors", len(diags.Errors()))
		}
		// Counted after the log lines, so whoever sees the count finds
		// the reason logged.
		s.metrics.policyReloads.WithLabelValues("error").Inc()
		return
	}
	// fixed: the previous read was rejected, and this one is valid. The
	// operator who fixed it is told, even when the fix was a revert to
	// the policy already serving.
	fixed := w.lastErr != ""
	w.lastErr = ""
	_, latest := s.in.policies()
	if latest != nil && reflect.DeepEqual(latest, set) {
		w.keep(latest)
		if fixed {
			s.log.Info("policy accepted: the errors are fixed; unchanged from the last valid policy", "groups", len(set.Groups), "certificates", len(set.Certificates))
		} else if requested {
			s.log.Info("policy re-read on request: unchanged", "groups", len(set.Groups), "certificates", len(set.Certificates))
		}
		return
	}
	// The new policy waits (as pending) until the registry has synced
	// the services it routes to, at most coverWait; meanwhile the
	// current one keeps serving, so both sets of services are watched.
	w.keep(set)
	first := s.in.setPending(set)
	s.updateWant()
	time.AfterFunc(coverWait, func() { notify(s.changed) })
	s.metrics.policyReloads.WithLabelValues("ok").Inc()
	for _, d := range diags.Warnings() {
		s.log.Warn(d.String())
	}
	msg := "policy reloaded"
	if first {
		msg = "policy loaded"
	}
	if fixed {
		msg = "policy accepted: the errors are fixed; " + msg
	}
	s.log.Info(msg, "groups", len(set.Groups), "certificates", len(set.Certificates))
	notify(s.changed)
}

// keep records the files of a valid set for state.dir (policyKeeper).
func (w *policyWatcher) keep(set *policy.Set) {
	if w.s.keeper != nil {
		w.s.logKeepError(w.s.keeper.capture(w.paths, set))
	}
}

// watch adds a watch on each policy directory and on its parent, and adds
// it again where the directory was deleted and created anew (its old watch
// followed the deleted directory). The parent's watch is what sees a
// policy directory come back.
func (w *policyWatcher) watch() {
	active := map[string]bool{}
	for _, d := range w.fw.WatchList() {
		active[d] = true
	}
	want := map[string]bool{}
	for _, d := range w.dirs {
		want[d] = true
		want[filepath.Dir(d)] = true
	}
	for dir := range want {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() {
			continue
		}
		if prev, ok := w.watched[dir]; ok && active[dir] && os.SameFile(prev, fi) {
			continue
		}
		_ = w.fw.Remove(dir) // a watch on the deleted directory, if fsnotify still has it
		if err := w.fw.Add(dir); err != nil {
			w.s.log.Warn("cannot watch policy directory; periodic re-reads continue", "dir", dir, "err", err)
			continue
		}
		w.watched[dir] = fi
	}
}

// relevant reports whether an event for name can change the policy: a file
// in a policy directory, or a policy directory itself (seen from its
// parent). Other entries of a parent directory are ignored.
func (w *policyWatcher) relevant(name string) bool {
	name = filepath.Clean(name)
	for _, d := range w.dirs {
		if name == d || filepath.Dir(name) == d {
			return true
		}
	}
	return false
}

// policyDirs lists the directories to watch: each policy path (or its
// directory, for a file or a path that does not exist yet) and the
// directories of the given files (a valid set's certificates). Directories,
// not files, because editors and certificate tools replace files by
// renaming a new one over the old.
func policyDirs(paths, files []string) []string {
	dirs := map[string]bool{}
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			dirs[filepath.Clean(p)] = true
		} else {
			dirs[filepath.Dir(p)] = true
		}
	}
	for _, f := range files {
		dirs[filepath.Dir(f)] = true
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
