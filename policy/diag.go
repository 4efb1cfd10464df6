package policy

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Pos is a position in a policy file. Line is 1-based; 0 means the whole file.
type Pos struct {
	File string
	Line int
}

// String returns "file:line", or "file" when Line is 0.
func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return p.File + ":" + strconv.Itoa(p.Line)
}

// Severity says whether a Diagnostic stops a policy set from being used.
type Severity int

const (
	// SeverityError marks a mistake that makes the policy set unusable.
	SeverityError Severity = iota
	// SeverityWarning marks something that is valid but probably not what
	// the operator meant.
	SeverityWarning
)

// String returns "error" or "warning".
func (s Severity) String() string {
	if s == SeverityWarning {
		return "warning"
	}
	return "error"
}

// Diagnostic is one finding about a policy file, pointing at its line.
type Diagnostic struct {
	Pos      Pos
	Severity Severity
	Message  string
}

// String returns "file:line: message" for errors and
// "file:line: warning: message" for warnings, always on one line: control
// and other non-printing characters in the file name or the message are
// escaped as Go escapes them (\n, \x00), so that a value from a policy
// file cannot forge a line of output.
func (d Diagnostic) String() string {
	var b strings.Builder
	if p := d.Pos.String(); p != "" {
		writeEscaped(&b, p)
		b.WriteString(": ")
	}
	if d.Severity == SeverityWarning {
		b.WriteString("warning: ")
	}
	writeEscaped(&b, d.Message)
	return b.String()
}

// writeEscaped writes s with every non-printing character (see
// unicode.IsPrint) and every invalid UTF-8 byte escaped.
func writeEscaped(b *strings.Builder, s string) {
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], string(utf8.RuneError)):
			fmt.Fprintf(b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
}

// Diagnostics is a list of findings, in file and line order.
type Diagnostics []Diagnostic

// HasErrors reports whether any diagnostic has error severity.
func (ds Diagnostics) HasErrors() bool {
	return slices.ContainsFunc(ds, func(d Diagnostic) bool { return d.Severity == SeverityError })
}

// Errors returns the error-severity diagnostics.
func (ds Diagnostics) Errors() Diagnostics { return ds.filter(SeverityError) }

// Warnings returns the warning-severity diagnostics.
func (ds Diagnostics) Warnings() Diagnostics { return ds.filter(SeverityWarning) }

func (ds Diagnostics) filter(s Severity) Diagnostics {
	var out Diagnostics
	for _, d := range ds {
		if d.Severity == s {
			out = append(out, d)
		}
	}
	return out
}

// Err returns nil when there are no errors, and otherwise an error whose
// message lists every error diagnostic, one per line. Warnings are left out.
func (ds Diagnostics) Err() error {
	errs := ds.Errors()
	if len(errs) == 0 {
		return nil
	}
	lines := make([]string, len(errs))
	for i, d := range errs {
		lines[i] = d.String()
	}
	return errors.New(strings.Join(lines, "\n"))
}

// sort orders diagnostics by file and line, keeping the order in which they
// were found for equal positions.
func (ds Diagnostics) sort() {
	slices.SortStableFunc(ds, func(a, b Diagnostic) int {
		return cmp.Or(cmp.Compare(a.Pos.File, b.Pos.File), cmp.Compare(a.Pos.Line, b.Pos.Line))
	})
}
