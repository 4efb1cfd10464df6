package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"":           0,
		"2GiB":       2 << 30,
		"1500MB":     1500e6,
		" 512 MiB ":  512 << 20,
		"1TB":        1e12,
		"100000000":  100000000,
		"100000000B": 100000000,
		"65536KiB":   64 << 20,
	} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, why := range map[string]string{
		"2G":                  "not a size",
		"lots":                "not a size",
		"-1GiB":               "not a size",
		"1.5GiB":              "not a size",
		"2":                   "below 64MiB",
		"99999999999999TiB":   "too large",
		"9223372036854775808": "9223372036854775808", // past int64
	} {
		if _, err := parseSize(in); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("parseSize(%q): error %v; want one saying %q", in, err, why)
		}
	}
}

// The limit comes from memory.limit, else GOMEMLIMIT, else 90% of the
// cgroup's memory limit (v2 or v1, the process's own cgroup first), else
// there is none.
func TestMemoryLimitSources(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	write := func(root, path, body string) {
		t.Helper()
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v2 := t.TempDir()
	write(v2, "proc/self/cgroup", "0::/nomad/task-1\n")
	write(v2, "sys/fs/cgroup/nomad/task-1/memory.max", "1073741824\n")
	write(v2, "sys/fs/cgroup/memory.max", "max\n")
	v2max := t.TempDir()
	write(v2max, "proc/self/cgroup", "0::/\n")
	write(v2max, "sys/fs/cgroup/memory.max", "max\n")
	v1 := t.TempDir()
	write(v1, "proc/self/cgroup", "5:devices:/\n4:cpu,memory:/task\n0::/\n")
	write(v1, "sys/fs/cgroup/memory/task/memory.limit_in_bytes", "2147483648\n")
	v1unlimited := t.TempDir()
	write(v1unlimited, "proc/self/cgroup", "4:memory:/task\n")
	write(v1unlimited, "sys/fs/cgroup/memory/task/memory.limit_in_bytes", "9223372036854771712\n")
	container := t.TempDir() // no /proc/self/cgroup entry that resolves: the root's
	write(container, "sys/fs/cgroup/memory.max", "536870912\n")

	for _, tc := range []struct {
		name, setting, root string
		want                int64
		source              string
	}{
		{"setting wins", "3GiB", v2, 3 << 30, "memory.limit"},
		{"cgroup v2, own cgroup", "", v2, (1 << 30) * 9 / 10, "cgroup"},
		{"cgroup v2 without a limit", "", v2max, 0, ""},
		{"cgroup v1", "", v1, (2 << 30) * 9 / 10, "cgroup"},
		{"cgroup v1 unlimited", "", v1unlimited, 0, ""},
		{"container root", "", container, (512 << 20) * 9 / 10, "cgroup"},
		{"no cgroup filesystem", "", t.TempDir(), 0, ""},
	} {
		got, source, err := memoryLimit(tc.setting, tc.root)
		if err != nil || got != tc.want || !strings.Contains(source, tc.source) {
			t.Errorf("%s: %d, %q, %v; want %d from %q", tc.name, got, source, err, tc.want, tc.source)
		}
	}
	t.Setenv("GOMEMLIMIT", "123MiB")
	if _, source, err := memoryLimit("", v2); err != nil || source != "GOMEMLIMIT" {
		t.Errorf("with GOMEMLIMIT: source %q, %v; want GOMEMLIMIT", source, err)
	}
}
