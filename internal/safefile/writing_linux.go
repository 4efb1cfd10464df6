package safefile

import (
	"errors"
	"os"
	"syscall"
)

// Writing reports whether any process has the regular file at path open for
// writing. It asks the kernel for a read lease, which is refused (EAGAIN)
// exactly while the file is open for writing, and drops the lease at once.
// The lease needs the caller to own the file (or CAP_LEASE) and a file
// system that supports leases; otherwise the error says so and the answer
// is unknown.
func Writing(path string) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|openFlags, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return false, errors.ErrUnsupported
	}
	sc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	var leaseErr error
	err = sc.Control(func(fd uintptr) {
		if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_SETLEASE, syscall.F_RDLCK); e != 0 {
			leaseErr = e
			return
		}
		syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_SETLEASE, syscall.F_UNLCK)
	})
	switch {
	case err != nil:
		return false, err
	case errors.Is(leaseErr, syscall.EAGAIN):
		return true, nil
	case leaseErr != nil:
		return false, &os.PathError{Op: "lease", Path: path, Err: leaseErr}
	}
	return false, nil
}
