//go:build unix

package safefile

import "syscall"

// openFlags makes opening a named pipe return at once instead of waiting
// for a writer. A regular file ignores O_NONBLOCK.
const openFlags = syscall.O_NONBLOCK
