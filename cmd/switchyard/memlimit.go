package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
)

// Switchyard's memory is mostly per proxy (each stream's view of what it
// has) plus garbage that is free once collected. Go's collector lets the
// heap grow to twice what is live before collecting (GOGC=100), so the
// resident size of a busy Switchyard is about twice its live heap. A soft
// memory limit makes the runtime collect harder as the heap nears it and
// return freed memory to the system, so the resident size stays near the
// limit as long as what is live fits under it (docs/operations.md).

// memoryLimitShare is the part of a cgroup's memory limit given to the
// Go runtime by default: the rest is for what the runtime does not count
// (thread stacks, mapped files) and headroom.
const memoryLimitShare = 0.9

// sizeRE is the syntax of memory.limit: a whole number of bytes with an
// optional unit, binary (KiB, MiB, GiB, TiB, as GOMEMLIMIT takes) or
// decimal (KB, MB, GB, TB).
var sizeRE = regexp.MustCompile(`^([0-9]+)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?$`)

// parseSize parses memory.limit; "" is 0 (no limit set).
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size: want a number of bytes with a unit, such as 2GiB or 1500MB", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	unit := map[string]int64{"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
		"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[m[2]]
	if n > math.MaxInt64/unit {
		return 0, fmt.Errorf("%q is too large", s)
	}
	if n*unit < 64<<20 {
		return 0, fmt.Errorf("%q is below 64MiB: Switchyard would do nothing but collect garbage", s)
	}
	return n * unit, nil
}

// memoryLimit decides the runtime's soft memory limit: memory.limit when
// set; else GOMEMLIMIT, which the runtime has applied already; else 90%
// of the memory limit of the cgroup Switchyard runs in (under cgroupRoot),
// if any; else none (0). source says which.
func memoryLimit(setting, cgroupRoot string) (limit int64, source string, err error) {
	if limit, err = parseSize(setting); err != nil || limit > 0 {
		return limit, "memory.limit", err
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1), "GOMEMLIMIT", nil
	}
	if cg, ok := cgroupMemoryLimit(cgroupRoot); ok {
		return int64(float64(cg) * memoryLimitShare), fmt.Sprintf("90%% of the cgroup's memory limit (%d bytes)", cg), nil
	}
	return 0, "", nil
}

// cgroupMemoryLimit reads the memory limit of this process's cgroup, v2
// (memory.max of its cgroup) or v1 (memory.limit_in_bytes); ok is false
// when there is none (no cgroup filesystem, "max", or v1's "unlimited").
func cgroupMemoryLimit(root string) (int64, bool) {
	for _, path := range cgroupFiles(root) {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			return 0, false
		}
		n, err := strconv.ParseInt(v, 10, 64)
		// v1 says "unlimited" with a page-rounded huge number.
		if err != nil || n <= 0 || n >= 1<<62 {
			return 0, false
		}
		return n, true
	}
	return 0, false
}

// cgroupFiles are where this process's cgroup memory limit may be: its own
// cgroup's (from /proc/self/cgroup), then the mount root's (in a container
// the root is its own cgroup).
func cgroupFiles(root string) []string {
	var files []string
	if b, err := os.ReadFile(filepath.Join(root, "proc/self/cgroup")); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			// v2: "0::/path"; v1: "N:memory:/path" (or "N:cpu,memory:/path").
			parts := strings.SplitN(line, ":", 3)
			if len(parts) != 3 {
				continue
			}
			switch {
			case parts[0] == "0" && parts[1] == "":
				files = append(files, filepath.Join(root, "sys/fs/cgroup", parts[2], "memory.max"))
			case hasController(parts[1], "memory"):
				files = append(files, filepath.Join(root, "sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes"))
			}
		}
	}
	return append(files,
		filepath.Join(root, "sys/fs/cgroup/memory.max"),
		filepath.Join(root, "sys/fs/cgroup/memory/memory.limit_in_bytes"))
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// applyMemoryLimit sets the runtime's soft memory limit (see memoryLimit)
// and says what it set.
func applyMemoryLimit(setting string) (string, error) {
	limit, source, err := memoryLimit(setting, "/")
	if err != nil {
		return "", fmt.Errorf("memory.limit: %w", err)
	}
	if limit <= 0 || limit == math.MaxInt64 {
		return "none", nil
	}
	debug.SetMemoryLimit(limit)
	return fmt.Sprintf("%d MiB (%s)", limit>>20, source), nil
}
