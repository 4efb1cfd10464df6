package envoy

import (
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// Two resources of one type with one name would replace each other in the
// snapshot; Build must refuse instead.
func TestBuildRefusesDuplicateNames(t *testing.T) {
	cfg := &ir.Config{Group: "edge", Secrets: []ir.Secret{
		{Name: "shop", CertPEM: "cert", KeyPEM: "PRIVATE-MATERIAL"},
		{Name: "shop", CertPEM: "cert", KeyPEM: "PRIVATE-MATERIAL"},
	}}
	_, err := Build(cfg)
	if err == nil || !strings.Contains(err.Error(), `name "shop" used twice`) {
		t.Fatalf("got %v; want an error naming the duplicate", err)
	}
	if strings.Contains(err.Error(), "PRIVATE-MATERIAL") {
		t.Errorf("error %q carries key material", err)
	}
}
