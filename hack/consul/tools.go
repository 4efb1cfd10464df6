//go:build tools

// Package consulbuild pins the Consul agent that Switchyard's tests and demo
// run. It is a throw-away module, kept out of the main module's go.mod.
package consulbuild

import _ "github.com/hashicorp/consul"
