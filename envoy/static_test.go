package envoy

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// envoyValidate has real Envoy check a bootstrap (--mode validate builds
// every listener, filter, route and cluster without opening sockets): an
// error unless Envoy says OK, with its output.
func envoyValidate(t testing.TB, boot []byte) ([]byte, error) {
	t.Helper()
	path := testenv.WriteFile(t, t.TempDir(), "bootstrap.json", boot)
	out, err := exec.Command(testenv.Bin(t, "envoy"), "--mode", "validate", "-c", path, "--use-dynamic-base-id").CombinedOutput()
	if err == nil && !strings.Contains(string(out), "OK") {
		err = errors.New("envoy did not say OK")
	}
	return out, err
}

// staticEdgeBootstrap is a bootstrap (JSON) serving a group's resources
// as static ones, with an admin listener on adminAddr unless "".
func staticEdgeBootstrap(t testing.TB, group string, res Resources, adminAddr string) []byte {
	t.Helper()
	return staticBootstrap(t, map[string]any{"id": "validate", "cluster": group}, res, adminAddr)
}

// staticBootstrap is a bootstrap (JSON) for node serving res as static
// resources, so that Envoy can validate or run a snapshot without an xDS
// server: endpoint assignments go inline into their EDS clusters, route
// configurations into their listeners' RDS, and secrets become static
// (an SDS reference keeps only its name). An admin listener on adminAddr
// unless "".
func staticBootstrap(t testing.TB, node map[string]any, res Resources, adminAddr string) []byte {
	t.Helper()
	asJSON := func(typ resource.Type) []any {
		var out []any
		for _, r := range res[typ] {
			b, err := protojson.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var v any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
		return out
	}
	byName := func(list []any, key string) map[string]any {
		m := map[string]any{}
		for _, v := range list {
			m[v.(map[string]any)[key].(string)] = v
		}
		return m
	}
	routes := byName(asJSON(resource.RouteType), "name")
	loads := byName(asJSON(resource.EndpointType), "clusterName")
	listeners, clusters := asJSON(resource.ListenerType), asJSON(resource.ClusterType)
	for _, v := range clusters {
		cl := v.(map[string]any)
		if cl["type"] == "EDS" {
			cl["type"] = "STATIC"
			delete(cl, "edsClusterConfig")
			cl["loadAssignment"] = loads[cl["name"].(string)]
		}
	}
	var static func(v any)
	static = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			delete(v, "sdsConfig")
			if rds, ok := v["rds"].(map[string]any); ok {
				delete(v, "rds")
				v["routeConfig"] = routes[rds["routeConfigName"].(string)]
			}
			for _, e := range v {
				static(e)
			}
		case []any:
			for _, e := range v {
				static(e)
			}
		}
	}
	static(listeners)
	static(clusters)
	boot := map[string]any{
		"node": node,
		"staticResources": map[string]any{
			"listeners": listeners,
			"clusters":  clusters,
			"secrets":   asJSON(resource.SecretType),
		},
	}
	if adminAddr != "" {
		host, port, _ := strings.Cut(adminAddr, ":")
		boot["admin"] = map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": host, "portValue": port}}}
	}
	b, err := json.Marshal(boot)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
