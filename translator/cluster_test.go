package translator

import (
	"strings"
	"testing"
)

func TestIsHostName(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{"localhost", true},
		{"payments.example.com", true},
		{"payments.example.com.", true},
		{"web-4.node.dc1.consul", true},
		{"a1", true},
		{"", false},
		{".", false},
		{"web 4", false},
		{"web_4.example.com", false},
		{"-web.example.com", false},
		{"web-.example.com", false},
		{"a..b", false},
		{strings.Repeat("a", 64) + ".com", false},
		{strings.Repeat("abcdefg.", 32) + "com", false}, // 259 characters
	} {
		if got := isHostName(tc.s); got != tc.want {
			t.Errorf("isHostName(%q) = %v; want %v", tc.s, got, tc.want)
		}
	}
}
