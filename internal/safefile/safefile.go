// Package safefile reads the files Switchyard is told to read (policy,
// certificate, key, CA and token files) without letting an odd file stall or
// exhaust it.
package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// The limits below are documented in docs/policy.md and
// docs/configuration.md; change them there too.
const (
	// PolicyLimit is the largest policy file read: 4 MiB is some 45,000
	// routes, far more than one file should hold, and still quick to
	// load (3 MB of routes validate in about 0.4 s and 150 MB of memory;
	// a 50 MB file took 18 s and 2.4 GB).
	PolicyLimit = 4 << 20
	// FileLimit is the largest of every other file read: certificates,
	// keys, CA bundles, the Consul token file and the settings file. A
	// public CA bundle of every root is about 250 KB.
	FileLimit = 1 << 20
)

var (
	// ErrNotRegular says a path names something other than a regular file
	// (a named pipe, a device, a socket, a directory).
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge says a file is larger than the limit for its kind.
	ErrTooLarge = errors.New("file too large")
)

// Read returns the contents of the regular file at path, or an error
// (an *fs.PathError naming path) when it is not a regular file or holds
// more than limit bytes.
//
// The open does not block: a named pipe with no writer would otherwise
// hang the open, and with it whatever waits for the file (a reload, a TLS
// handshake, a shutdown). The opened file, not the path, is then checked,
// so a file swapped between the check and the read cannot slip through, and
// the read stops after limit bytes even if the file grows meanwhile.
func Read(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|openFlags, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w (%s)", ErrNotRegular, kind(fi.Mode()))}
	}
	if fi.Size() > limit {
		return nil, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: %d bytes, more than the limit of %s", ErrTooLarge, fi.Size(), Size(limit))}
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		// It grew while being read.
		return nil, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: more than the limit of %s", ErrTooLarge, Size(limit))}
	}
	return b, nil
}

// kind names a file type for an error message.
func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a device"
	default:
		return "mode " + m.String()
	}
}

// Size formats a byte count as the limits are documented: "4 MiB".
func Size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}
