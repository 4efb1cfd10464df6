package policy

import (
	"slices"
	"testing"
)

func TestSubsetMatchesAndLabel(t *testing.T) {
	v2 := Subset{Tags: []string{"v2"}}
	beta := Subset{Meta: map[string]string{"track": "beta"}}
	tests := []struct {
		name   string
		s      Subset
		tags   []string
		meta   map[string]string
		want   bool
		wantID string
	}{
		{"whole service", Subset{}, nil, nil, true, ""},
		{"tag present", v2, []string{"canary", "v2"}, nil, true, "tag=v2"},
		{"tag absent", v2, []string{"v1"}, nil, false, "tag=v2"},
		{"every tag needed", Subset{Tags: []string{"eu", "v2"}}, []string{"v2"}, nil, false, "tag=eu,tag=v2"},
		{"meta equal", beta, nil, map[string]string{"track": "beta"}, true, "meta.track=beta"},
		{"meta differs", beta, nil, map[string]string{"track": "stable"}, false, "meta.track=beta"},
		{"tags then meta", Subset{Tags: []string{"v2"}, Meta: map[string]string{"b": "2", "a": "1"}}, []string{"v2"}, map[string]string{"a": "1", "b": "2"}, true, "tag=v2,meta.a=1,meta.b=2"},
		{"the rest excludes", Subset{Except: []Subset{v2, beta}}, []string{"v2"}, nil, false, "not(tag=v2|meta.track=beta)"},
		{"the rest includes", Subset{Except: []Subset{v2, beta}}, []string{"v1"}, map[string]string{"track": "stable"}, true, "not(tag=v2|meta.track=beta)"},
	}
	for _, tt := range tests {
		if got := tt.s.Matches(tt.tags, tt.meta); got != tt.want {
			t.Errorf("%s: Matches(%v, %v) = %v; want %v", tt.name, tt.tags, tt.meta, got, tt.want)
		}
		if got := tt.s.String(); got != tt.wantID {
			t.Errorf("%s: String() = %q; want %q", tt.name, got, tt.wantID)
		}
	}
}

// Tags or meta on a route that names no service (whatever its action) is
// an error, not silently unused.
func TestSubsetNeedsService(t *testing.T) {
	_, diags := Parse(map[string][]byte{"edge.yaml": []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    port: 10000
    hosts:
      - domains: ["*"]
        routes:
          - meta: { version: "2" }
`)})
	want := "edge.yaml:10: tags and meta select instances of a route's service, and this route has none"
	var got []string
	for _, d := range diags {
		got = append(got, d.String())
	}
	if !slices.Contains(got, want) {
		t.Errorf("got %q; want it to include %q", got, want)
	}
}
