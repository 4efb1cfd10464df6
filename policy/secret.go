package policy

import (
	"fmt"
	"io"
)

const redacted = "[redacted]"

// Secret holds private key bytes. Every way the standard library and yaml
// print or marshal a value (%v, %+v, %#v, %s, %x, json, text, yaml) shows
// "[redacted]" instead of the bytes, so a logged Certificate never leaks its
// key. Use the bytes directly (string(s), []byte(s)) where they are needed.
type Secret []byte

// String returns "[redacted]".
func (Secret) String() string { return redacted }

// GoString returns "[redacted]".
func (Secret) GoString() string { return redacted }

// Format writes "[redacted]" for every verb.
func (Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// MarshalJSON returns the JSON string "[redacted]".
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "[redacted]".
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// MarshalYAML returns "[redacted]".
func (Secret) MarshalYAML() (any, error) { return redacted, nil }
