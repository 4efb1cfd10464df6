package policy

import (
	"math/rand/v2"
	"testing"
)

// The index must name the same route the pairwise check names: the first
// earlier route that shadows each route.
func TestShadowIndexMatchesPairwiseCheck(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	paths := []string{"/", "/a", "/ab", "/abc", "/a/", "/a/b", "/b", "/ba", "/abd"}
	random := func() Match {
		p := paths[rng.IntN(len(paths))]
		var m Match
		switch rng.IntN(4) {
		case 0:
			m.Path = p
		case 1:
			m.PathRegex = "/.*"
		default:
			m.PathPrefix = p
		}
		switch rng.IntN(10) {
		case 0:
			m.Headers = []HeaderMatch{{Name: "x", Present: true}}
		case 1:
			m.Methods = []string{"GET"}
		case 2:
			m.QueryParams = []QueryParamMatch{{Name: "q", Present: true}}
		case 3:
			m.CaseInsensitive = m.PathRegex == ""
		}
		return m
	}
	warned := 0
	for range 2000 {
		routes := make([]Match, 1+rng.IntN(12))
		for i := range routes {
			routes[i] = random()
		}
		var x shadowIndex
		for i, r := range routes {
			want := -1
			for j, by := range routes[:i] {
				if shadows(by, r) {
					want = j
					break
				}
			}
			got, ok := x.first(r)
			if !ok {
				got = -1
			}
			if got != want {
				t.Fatalf("routes %+v: route %d is shadowed first by %d; the pairwise check says %d", routes, i, got, want)
			}
			if want >= 0 {
				warned++
			}
			x.add(i, r)
		}
	}
	if warned == 0 {
		t.Fatal("no route was shadowed; the test proves nothing")
	}
}
