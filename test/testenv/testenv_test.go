package testenv

import "testing"

// TestConsulStarts proves the installed agent starts, elects itself leader
// and answers the catalog API.
func TestConsulStarts(t *testing.T) {
	c := Consul(t)
	services, _, err := c.Client(t).Catalog().Services(nil)
	if err != nil {
		t.Fatalf("catalog services: %v", err)
	}
	if _, ok := services["consul"]; !ok {
		t.Fatalf("got services %v; want the built-in consul service", services)
	}
}
