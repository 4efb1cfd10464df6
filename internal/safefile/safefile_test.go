package safefile_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-io/switchyard/internal/safefile"
)

// read calls safefile.Read and fails the test if it does not return within
// a generous bound: the bug this package exists for is a read that never
// returns.
func read(t *testing.T, path string, limit int64) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := safefile.Read(path, limit)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		return r.b, r.err
	case <-ctx.Done():
		t.Fatalf("Read(%s) did not return", path)
		return nil, nil
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "policy.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, 1025), 0o600); err != nil {
		t.Fatal(err)
	}
	exact := filepath.Join(dir, "exact.yaml")
	if err := os.WriteFile(exact, []byte(strings.Repeat("a", 1024)), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.yaml")
	if err := os.Symlink(exact, link); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		path    string
		wantErr error
		wantMsg string
	}{
		{"named pipe with no writer", fifo, safefile.ErrNotRegular, "read " + fifo + ": not a regular file (a named pipe)"},
		{"endless device", "/dev/zero", safefile.ErrNotRegular, "read /dev/zero: not a regular file (a character device)"},
		{"directory", dir, safefile.ErrNotRegular, "read " + dir + ": not a regular file (a directory)"},
		{"over the limit", big, safefile.ErrTooLarge, "read " + big + ": file too large: 1025 bytes, more than the limit of 1 KiB"},
		{"missing", filepath.Join(dir, "missing"), os.ErrNotExist, "open " + filepath.Join(dir, "missing") + ": no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := read(t, tt.path, 1024)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Read(%s) = %d bytes, %v; want %v", tt.path, len(b), err, tt.wantErr)
			}
			if err.Error() != tt.wantMsg {
				t.Errorf("Read(%s) error = %q; want %q", tt.path, err, tt.wantMsg)
			}
		})
	}

	for _, path := range []string{exact, link} {
		b, err := read(t, path, 1024)
		if err != nil || len(b) != 1024 {
			t.Errorf("Read(%s) = %d bytes, %v; want 1024 bytes", path, len(b), err)
		}
	}
}

func TestSize(t *testing.T) {
	for n, want := range map[int64]string{
		safefile.PolicyLimit: "4 MiB",
		safefile.FileLimit:   "1 MiB",
		64 << 10:             "64 KiB",
		1000:                 "1000 bytes",
	} {
		if got := safefile.Size(n); got != want {
			t.Errorf("Size(%d) = %q; want %q", n, got, want)
		}
	}
}
