// Command switchyard is the Switchyard control plane: it watches Consul and
// policy files and serves Envoy its configuration over xDS.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/switchyard-io/switchyard/internal/redact"
)

func main() {
	cmd := newRootCmd(os.Stdout, os.Stderr)
	if err := cmd.Execute(); err != nil {
		var ee exitError
		if !errors.As(err, &ee) {
			fmt.Fprintln(os.Stderr, "switchyard:", redact.PEMKeys(err.Error()))
		}
		os.Exit(1)
	}
}

// exitError ends the command with status 1 after it has already printed
// what went wrong (validate's list of diagnostics).
type exitError struct{ msg string }

func (e exitError) Error() string { return e.msg }
