//go:build !linux

package safefile

import "errors"

// Writing reports whether any process has the file at path open for
// writing. Only Linux can tell; elsewhere the answer is unknown.
func Writing(path string) (bool, error) { return false, errors.ErrUnsupported }
