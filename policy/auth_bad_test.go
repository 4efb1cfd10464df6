package policy_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/policy"
)

// The bad files of auth.go's fields, appended here so that this table and
// bad_test.go's can grow apart without conflicts.
func init() {
	badFiles = append(badFiles, struct {
		path string
		want []string
	}{"auth", []string{
		"auth/edge.yaml:5: warning: listener has no hosts; Envoy will answer every request with 404",
		"auth/edge.yaml:9: extAuthz may have only one of service or address, got service and address",
		`auth/edge.yaml:10: extAuthz protocol "soap": want grpc or http`,
		"auth/edge.yaml:11: extAuthz timeout must be above 0: every request waits for the check",
		`auth/edge.yaml:12: extAuthz failureMode "open": want allow (let requests through when the service fails) or deny (answer them 403)`,
		`auth/edge.yaml:16: extAuthz address "authz internal": want host:port, such as authz.internal:9001 or 10.0.0.9:9001`,
		"auth/edge.yaml:18: pathPrefix is for protocol: http; a gRPC authorization service says what to add in its answer",
		"auth/edge.yaml:19: upstreamHeaders is for protocol: http; a gRPC authorization service says what to add in its answer",
		`auth/edge.yaml:20: headers: invalid header name ":path"`,
		`auth/edge.yaml:20: headers: header "x-key" is listed twice`,
		"auth/edge.yaml:25: audiences must list at least one audience, or be omitted to accept any",
		"auth/edge.yaml:26: jwksFile testdata/bad/auth/private-jwks.json key 1 is a private or symmetric key (it is not shown); give public keys only: the key set is sent to every Envoy of the group and shown by translate",
		`auth/edge.yaml:27: warning: JWT provider "two" is not required by listener "b", nor by its hosts or routes (jwt.require, requireJWT); it checks nothing`,
		"auth/edge.yaml:29: JWT provider may have only one of jwks, jwksFile or remoteJWKS, got jwks and jwksFile",
		"auth/edge.yaml:29: jwksFile testdata/bad/auth/broken-jwks.json is not a JSON Web Key Set: invalid JSON (the content is not shown)",
		`auth/edge.yaml:30: jwks holds no keys: want a JSON Web Key Set, {"keys": [...]}`,
		`auth/edge.yaml:31: duplicate JWT provider "one" (also at line 23)`,
		"auth/edge.yaml:32: issuer must not be empty",
		`auth/edge.yaml:33: unknown field "ttl" in remoteJWKS`,
		`auth/edge.yaml:33: remoteJWKS path must start with "/" and hold no space or '#', got "jwks.json"`,
		"auth/edge.yaml:33: remoteJWKS timeout must be above 0",
		`auth/edge.yaml:34: payloadHeader: invalid header name "host" (pseudo-headers and host cannot be set)`,
		`auth/edge.yaml:36: invalid claim "user..id": want a claim name, nested ones joined by dots (such as sub or user.id)`,
		`auth/edge.yaml:37: missing required field "issuer" in JWT provider`,
		`auth/edge.yaml:37: warning: JWT provider "four" is not required by listener "b", nor by its hosts or routes (jwt.require, requireJWT); it checks nothing`,
		"auth/edge.yaml:38: jwks key 1 is a private or symmetric key (it is not shown); give public keys only: the key set is sent to every Envoy of the group and shown by translate",
		`auth/edge.yaml:39: unknown JWT provider "three"; listener "b" has one, two, four`,
		"auth/edge.yaml:42: requireJWT lists the JWT providers whose tokens are accepted, or is false to require none; true names none",
		"auth/edge.yaml:45: requireJWT must list at least one JWT provider",
		"auth/edge.yaml:46: warning: route is unreachable: the route at testdata/bad/auth/edge.yaml:44 matches all its requests first",
		"auth/edge.yaml:48: rewrite may have only one of host and hostFromUpstream",
		"auth/edge.yaml:49: warning: route is unreachable: the route at testdata/bad/auth/edge.yaml:44 matches all its requests first",
		"auth/edge.yaml:51: a route through the mesh (mesh: true) needs the Connect mesh, which is off; run serve --mesh (and validate --mesh), or remove it",
		"auth/edge.yaml:51: a route through the mesh reaches its services' sidecars, whose addresses are no Host for the service; drop mesh: true or rewrite.hostFromUpstream",
		"auth/edge.yaml:53: warning: route is unreachable: the route at testdata/bad/auth/edge.yaml:44 matches all its requests first",
		"auth/edge.yaml:55: hostFromUpstream must be true, or be omitted to keep the client's Host",
		`auth/edge.yaml:60: warning: extAuthz has no effect: listener "c" has no extAuthz`,
		`auth/edge.yaml:63: requireJWT names JWT provider "one", but listener "c" has no jwt providers`,
		"auth/edge.yaml:64: warning: route is unreachable: the route at testdata/bad/auth/edge.yaml:62 matches all its requests first",
		`auth/edge.yaml:66: warning: requireJWT: false has no effect: listener "c" has no jwt`,
		`auth/edge.yaml:67: extAuthz must be true or false, got the string "no"`,
		`auth/group.yaml:10: warning: JWT provider "spare" is not required by any listener using the proxy group's jwt, nor by their hosts or routes (jwt.require, requireJWT); it checks nothing`,
		`auth/group.yaml:20: unknown JWT provider "local"; listener "inherits" has corp, spare`,
		`auth/group.yaml:29: unknown JWT provider "corp"; listener "own" has local`,
		"auth/group.yaml:38: warning: the proxy group's extAuthz has no effect: every listener has its own",
		"auth/group.yaml:40: warning: the proxy group's jwt has no effect: every listener has its own",
	}}, struct {
		path string
		want []string
	}{"authkeys", []string{
		"authkeys/edge.yaml:15: jwksFile holds what looks like JSON content, not a file path; write it to a file and give that file's path (the value is not shown, in case it is a key)",
		"authkeys/edge.yaml:18: jwksFile holds what looks like JSON content, not a file path; write it to a file and give that file's path (the value is not shown, in case it is a key)",
		"authkeys/edge.yaml:22: jwks key 1 is a private or symmetric key (it is not shown); give public keys only: the key set is sent to every Envoy of the group and shown by translate",
		"authkeys/edge.yaml:23: jwks key 1 is a private or symmetric key (it is not shown); give public keys only: the key set is sent to every Envoy of the group and shown by translate",
		"authkeys/edge.yaml:24: jwks key 1 is a private or symmetric key (it is not shown); give public keys only: the key set is sent to every Envoy of the group and shown by translate",
		"authkeys/edge.yaml:25: jwks key 1 is a private or symmetric key (it is not shown); give public keys only: the key set is sent to every Envoy of the group and shown by translate",
		"authkeys/edge.yaml:26: jwks key 1 is a private or symmetric key (it is not shown); give public keys only: the key set is sent to every Envoy of the group and shown by translate",
		"authkeys/edge.yaml:27: jwks key 1 is a private or symmetric key (it is not shown); give public keys only: the key set is sent to every Envoy of the group and shown by translate",
		"authkeys/edge.yaml:28: jwks key 1 is a private or symmetric key (it is not shown); give public keys only: the key set is sent to every Envoy of the group and shown by translate",
		"authkeys/edge.yaml:30: jwks key 2 is a private or symmetric key (it is not shown); give public keys only: the key set is sent to every Envoy of the group and shown by translate",
		"authkeys/edge.yaml:32: jwks must not contain control characters other than newline, carriage return and tab (the value is not shown, in case it is a key)",
	}})
}

// A private key in a key set, or a key set pasted for a file's path, is
// refused without being shown, neither as a value nor as a path.
func TestJWKSKeyNotShown(t *testing.T) {
	for _, dir := range []string{"auth", "authkeys"} {
		_, diags := policy.Load(filepath.Join("testdata", "bad", dir))
		for _, d := range diags {
			// c2VjcmV0 is every private member's value (private-jwks.json's
			// "d", the inline keys'); "kty" starts each key.
			if s := d.String(); strings.Contains(s, "c2VjcmV0") || strings.Contains(s, "kty") {
				t.Errorf("diagnostic shows key material: %s", d)
			}
		}
		if len(diags) == 0 {
			t.Fatalf("%s: no diagnostics", dir)
		}
	}
}
