package policy

import (
	"bufio"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The size check must never count less than RE2 does, or validate would
// accept a regex Envoy refuses. testdata/re2-sizes.tsv holds regexes (real
// path patterns, nested repetitions, nullable loops, Unicode classes, case
// folding, anchors) with the size Envoy reported for each.
func TestRE2ProgramSizeIsAnUpperBound(t *testing.T) {
	f, err := os.Open("testdata/re2-sizes.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		size, quoted, ok := strings.Cut(line, "\t")
		want, err := strconv.Atoi(size)
		var re string
		if !ok || err != nil || json.Unmarshal([]byte(quoted), &re) != nil {
			t.Fatalf("bad line %q", line)
		}
		if got := re2ProgramSize(re); got < want {
			t.Errorf("re2ProgramSize(%q) = %d; RE2 in Envoy counts %d", re, got, want)
		}
		n++
	}
	if err := sc.Err(); err != nil || n < 200 {
		t.Fatalf("read %d regexes (%v); want the whole file", n, err)
	}
}

// Exact counts for a few regexes pin the arithmetic; change them only
// with a reason.
func TestRE2ProgramSizeCounts(t *testing.T) {
	for _, tt := range []struct {
		re   string
		want int
	}{
		{"a", 1 + 1 + 1 + 3 + 2},                        // fail, a, match, .*?, capture
		{"é", 1 + 2 + 1 + 3 + 2},                        // two UTF-8 bytes
		{"[a-z]", 1 + 3 + 1 + 3 + 2},                    // one range, one alternation
		{"a*", 1 + 3 + 1 + 3 + 2},                       // a and a loop
		{`[\x{80}-\x{7FF}]`, 1 + 4 + 1 + 3 + 2},         // C2-DF 80-BF
		{`[\x{800}-\x{FFFF}]`, 1 + 4*(3+2) + 1 + 3 + 2}, // E0 A0-BF; E1-EC; ED 80-9F; EE-EF
		{"(a)", 1 + 3 + 1 + 3 + 2},
		{"(?i)a", 1 + 1 + 1 + 3 + 2},                 // one folding byte range
		{"(?i)k", 1 + (1 + 2) + (3 + 2) + 1 + 3 + 2}, // k and K, or U+212A
		{"", 1 + 1 + 1 + 3 + 2},
	} {
		if got := re2ProgramSize(tt.re); got != tt.want {
			t.Errorf("re2ProgramSize(%q) = %d; want %d", tt.re, got, tt.want)
		}
	}
	if got := re2ProgramSize("("); got != -1 {
		t.Errorf("re2ProgramSize of a syntax error = %d; want -1", got)
	}
}

// BenchmarkRE2ProgramSize measures the check on the largest class
// repetition Go parses.
func BenchmarkRE2ProgramSize(b *testing.B) {
	for b.Loop() {
		re2ProgramSize(`[\p{L}\p{N}]{1000}`)
	}
}
