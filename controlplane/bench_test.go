package controlplane

import (
	"testing"

	"github.com/switchyard-io/switchyard/translator/translatortest"
)

// BenchmarkBuild measures a full rebuild, as the control plane runs it on a
// change: translate, build and validate every Envoy resource, hash each
// type and check the snapshot's consistency. 1,000 services x 10 instances.
func BenchmarkBuild(b *testing.B) {
	snap, set := translatortest.Estate(b, 1000, 10)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		groups, _, err := build(snap, set)
		if err != nil || len(groups) != 1 {
			b.Fatalf("build: %d groups, %v", len(groups), err)
		}
	}
}
