package envoy

import "fmt"

// The Envoy releases Switchyard supports: every test runs against the
// newest, and a smoke test against the latest patch of each older minor
// release (hack/compat.sh). Keep these, hack/tools.sh and the README in
// step.
const (
	MinEnvoyMinor = 36 // 1.36
	MaxEnvoyMinor = 40 // 1.40
)

// SupportedEnvoys names the supported range for messages: "1.36 to 1.40".
var SupportedEnvoys = fmt.Sprintf("1.%d to 1.%d", MinEnvoyMinor, MaxEnvoyMinor)

// EnvoySupported reports whether Envoy major.minor is in the supported
// range.
func EnvoySupported(major, minor uint32) bool {
	return major == 1 && minor >= MinEnvoyMinor && minor <= MaxEnvoyMinor
}
