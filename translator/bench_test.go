package translator_test

import (
	"testing"

	"github.com/switchyard-io/switchyard/translator"
	"github.com/switchyard-io/switchyard/translator/translatortest"
)

// BenchmarkTranslate is the translation baseline: 1,000 services x 10
// instances into one proxy group's IR. Recorded in docs/benchmarks.md.
func BenchmarkTranslate(b *testing.B) {
	snap, set := translatortest.Estate(b, 1000, 10)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res := translator.Translate(snap, set)
		if len(res.Configs) != 1 || len(res.Configs[0].Clusters) != 1000 {
			b.Fatalf("got %d configs; want 1 with 1000 clusters", len(res.Configs))
		}
	}
}
