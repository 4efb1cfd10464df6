//go:build tools

// Package ratelimitbuild pins envoyproxy/ratelimit, the global rate limit
// service that Switchyard's tests and demo run. It is a throw-away module,
// kept out of the main module's go.mod.
package ratelimitbuild

import _ "github.com/envoyproxy/ratelimit/src/service_cmd"
