package controlplane

import "testing"

func TestRejectedSources(t *testing.T) {
	listeners := map[string]string{
		"public":       "edge.yaml:5",
		"public-admin": "edge.yaml:20",
	}
	clusters := map[string]string{"web": "edge.yaml:12", "web-canary": "edge.yaml:14"}
	for _, tc := range []struct {
		name    string
		sources map[string]string
		detail  string
		want    string
	}{
		{"listener named", listeners,
			"Error adding/updating listener(s) public-admin: cannot bind '127.0.0.1:8443': Address already in use",
			"edge.yaml:20 (public-admin)"},
		{"a longer name does not match a shorter one", clusters,
			"cluster 'web-canary': bad config", "edge.yaml:14 (web-canary)"},
		{"a name ending a sentence", clusters, "cannot update cluster web.", "edge.yaml:12 (web)"},
		{"several named, sorted", listeners,
			"Error adding/updating listener(s) public: x, public-admin: y",
			"edge.yaml:20 (public-admin); edge.yaml:5 (public)"},
		{"none named among several", clusters, "something went wrong", ""},
		{"none named, the only resource", map[string]string{"public": "edge.yaml:5"},
			"Invalid regex: too large", "edge.yaml:5 (public)"},
		{"nothing known", nil, "listener public: bad", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rejectedSources(tc.sources, tc.detail); got != tc.want {
				t.Errorf("rejectedSources(%q) = %q; want %q", tc.detail, got, tc.want)
			}
		})
	}
}
