package policy_test

import (
	"testing"

	"github.com/switchyard-io/switchyard/policy"
)

// A diagnostic is one line whatever its file name and message hold.
func TestDiagnosticStringEscapes(t *testing.T) {
	for _, tt := range []struct {
		d    policy.Diagnostic
		want string
	}{
		{policy.Diagnostic{Pos: policy.Pos{File: "a\nvalid: b.yaml", Line: 3}, Message: "m\r\nvalid: 1"},
			`a\nvalid: b.yaml:3: m\r\nvalid: 1`},
		{policy.Diagnostic{Pos: policy.Pos{File: "a.yaml"}, Severity: policy.SeverityWarning, Message: "nul\x00 del\x7f bad\xff sep\u2028 ok é \"q\" \\"},
			`a.yaml: warning: nul\x00 del\x7f bad\xff sep\u2028 ok é "q" \`},
		{policy.Diagnostic{Message: "tab\there"}, `tab\there`},
	} {
		if got := tt.d.String(); got != tt.want {
			t.Errorf("String() = %q; want %q", got, tt.want)
		}
	}
}
