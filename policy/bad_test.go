package policy_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/switchyard-io/switchyard/policy"
)

// badFiles lists each file of testdata/bad (one mistake, or one group of
// mistakes, per file) with every diagnostic it must produce: a missing or an
// extra one fails TestBadFiles.
var badFiles = []struct {
	path string // under testdata/bad
	want []string
}{
	{"unknown-field.yaml", []string{
		`unknown-field.yaml:11: unknown field "pathprefix" in route match`,
	}},
	{"dup-group", []string{
		`dup-group/b.yaml:4: duplicate proxy group "edge" (also defined at testdata/bad/dup-group/a.yaml:3)`,
	}},
	{"bad-regex.yaml", []string{
		"bad-regex.yaml:11: invalid pathRegex \"/items/(+\": error parsing regexp: missing argument to repetition operator: `+`",
		"bad-regex.yaml:13: invalid regex \"[a-z\": error parsing regexp: missing closing ]: `[a-z`",
	}},
	{"zero-weights.yaml", []string{
		`zero-weights.yaml:11: split weights sum to zero; give at least one service a positive weight`,
	}},
	{"missing-cert.yaml", []string{
		`missing-cert.yaml:16: certFile testdata/bad/tls/missing.crt does not exist`,
		`missing-cert.yaml:17: keyFile testdata/bad/tls/missing.key does not exist`,
	}},
	{"unknown-cert.yaml", []string{
		`unknown-cert.yaml:9: unknown certificate "shop-cert"`,
	}},
	{"bad-api-version.yaml", []string{
		`bad-api-version.yaml:1: unsupported apiVersion "switchyard.io/v2"; supported: switchyard.io/v1`,
		`bad-api-version.yaml:5: missing apiVersion; want apiVersion: switchyard.io/v1`,
		`bad-api-version.yaml:8: missing kind; supported kinds: Certificate, Mesh, ProxyGroup, Service`,
	}},
	{"unknown-kind.yaml", []string{
		`unknown-kind.yaml:2: unknown kind "Gateway"; supported kinds: Certificate, Mesh, ProxyGroup, Service`,
	}},
	// The documents before a syntax error are still checked.
	{"syntax.yaml", []string{
		`syntax.yaml:3: invalid ProxyGroup name "Edge": use lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters`,
		`syntax.yaml:3: warning: proxy group has no listeners`,
		`syntax.yaml:11: invalid YAML: mapping values are not allowed in this context`,
	}},
	{"dup-domain.yaml", []string{
		`dup-domain.yaml:11: duplicate domain "SHOP.example.com" in this listener (also at testdata/bad/dup-domain.yaml:8); Envoy requires domains to be unique per listener`,
	}},
	{"many-errors.yaml", []string{
		`many-errors.yaml:5: invalid listener name "Public": use lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters`,
		`many-errors.yaml:6: invalid address "localhost": want an IP address such as 0.0.0.0 or ::`,
		`many-errors.yaml:7: port must be between 1 and 65535, got 70000`,
		`many-errors.yaml:11: route needs one of service, split, redirect or directResponse`,
		`many-errors.yaml:12: route match may have only one of pathPrefix, path or pathRegex, got pathPrefix and path`,
		`many-errors.yaml:12: pathPrefix must start with "/", got "api"`,
		`many-errors.yaml:13: invalid timeout "2 seconds": want a duration such as "2s" or "500ms"`,
		`many-errors.yaml:14: attempts must be between 0 and 10, got 11`,
		`many-errors.yaml:14: unknown retry condition "timeout"; supported: 5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, envoy-ratelimited, http3-post-connect-failure, reset-before-request`,
		`many-errors.yaml:14: perTryTimeout must not be negative, got -1s`,
		`many-errors.yaml:15: requests must be between 1 and 4294967295, got 0`,
		`many-errors.yaml:15: per must be at least 50ms, got 0s`,
		`many-errors.yaml:16: duplicate route name "api" (also defined at testdata/bad/many-errors.yaml:11)`,
		`many-errors.yaml:17: invalid service name "web app": use letters, digits, '_', '.' and '-', starting with a letter or digit`,
		`many-errors.yaml:18: route may have only one of service, split, redirect or directResponse, got service and split`,
		`many-errors.yaml:18: weight must be between 0 and 4294967295, got -1`,
		`many-errors.yaml:21: header match needs one of exact, prefix, suffix, contains, regex, present or absent`,
		`many-errors.yaml:22: invalid header name "bad header"`,
		`many-errors.yaml:22: present must be true; use absent: true to match requests without the header`,
		`many-errors.yaml:24: port must be an integer, got the string "8080"`,
		`many-errors.yaml:25: duplicate field "port" in listener (first given at line 24)`,
		`many-errors.yaml:26: hosts must be a list, got a mapping`,
		`many-errors.yaml:27: warning: listener has no hosts; Envoy will answer every request with 404`,
		`many-errors.yaml:27: duplicate listener name "admin" (also defined at testdata/bad/many-errors.yaml:23)`,
		`many-errors.yaml:29: address 0.0.0.0:9000 is already used by the listener at testdata/bad/many-errors.yaml:27`,
		`many-errors.yaml:31: certificates must list at least one certificate`,
		`many-errors.yaml:33: domains must list at least one domain; use "*" for any`,
		`many-errors.yaml:33: warning: host has no routes; Envoy will answer its requests with 404`,
		`many-errors.yaml:34: invalid domain "a*b": a wildcard "*" may only be the first or the last character`,
		`many-errors.yaml:35: invalid timeout "5": want a duration such as "2s" or "500ms"`,
		`many-errors.yaml:36: missing required field "port" in listener`,
		`many-errors.yaml:37: route may have only one of service, split, redirect or directResponse, got service and split`,
		`many-errors.yaml:37: missing required field "weight" in split entry`,
	}},
	// Envoy's schema refuses control characters in domains, headers and
	// paths, and at build time that would fail every group: each is an
	// error here, shown escaped.
	{"control-chars.yaml", []string{
		`control-chars.yaml:3: name must not contain control characters (such as newline, carriage return, tab or NUL), got "edge\n"`,
		`control-chars.yaml:7: address must not contain control characters (such as newline, carriage return, tab or NUL), got "0.0.0.0\r"`,
		`control-chars.yaml:8: certificates must not contain control characters (such as newline, carriage return, tab or NUL), got "shop\u0085"`,
		`control-chars.yaml:10: domains must not contain control characters (such as newline, carriage return, tab or NUL), got "shop.example.com\nvalid: 1 proxy group(s)"`,
		`control-chars.yaml:10: domains must not contain control characters (such as newline, carriage return, tab or NUL), got "api.example.com\r"`,
		`control-chars.yaml:10: domains must not contain control characters (such as newline, carriage return, tab or NUL), got "nul\x00.example.com"`,
		`control-chars.yaml:12: name must not contain control characters (such as newline, carriage return, tab or NUL), got "api\t"`,
		`control-chars.yaml:14: pathPrefix must not contain control characters (such as newline, carriage return, tab or NUL), got "/api\x7f"`,
		`control-chars.yaml:16: name must not contain control characters (such as newline, carriage return, tab or NUL), got "x-token\n"`,
		`control-chars.yaml:16: exact must not contain control characters (such as newline, carriage return, tab or NUL), got "a\r\nx-injected: 1"`,
		`control-chars.yaml:17: prefix must not contain control characters (such as newline, carriage return, tab or NUL), got "\x00"`,
		`control-chars.yaml:18: service must not contain control characters (such as newline, carriage return, tab or NUL), got "web\n"`,
		`control-chars.yaml:19: path must not contain control characters (such as newline, carriage return, tab or NUL), got "/a\nb"`,
		`control-chars.yaml:20: service must not contain control characters (such as newline, carriage return, tab or NUL), got "api\r"`,
		`control-chars.yaml:21: pathRegex must not contain control characters (such as newline, carriage return, tab or NUL), got "/a\n"`,
	}},
	{"access-log.yaml", []string{
		`access-log.yaml:6: accessLog path "logs/access.log": want stdout, stderr or an absolute, clean file path (such as /var/log/envoy/access.log)`,
		`access-log.yaml:7: accessLog format "xml": want json or text`,
		`access-log.yaml:8: unknown field "rotate" in accessLog`,
		`access-log.yaml:20: enabled must be true or false, got the string "no"`,
		`access-log.yaml:20: accessLog path "/var/log/../access.log": want stdout, stderr or an absolute, clean file path (such as /var/log/envoy/access.log)`,
		`access-log.yaml:32: warning: accessLog is disabled (enabled: false); its path and format have no effect`,
		`access-log.yaml:44: accessLog must be a mapping, got the string "stdout"`,
	}},
	{"tracing.yaml", []string{
		`tracing.yaml:6: tracing address "otel-collector": want host:port, such as otel-collector.service.consul:4317 or 10.0.0.9:4317`,
		`tracing.yaml:7: sampling must be between 0 and 100, got 101`,
		`tracing.yaml:8: tracing serviceName must not be empty`,
		`tracing.yaml:9: unknown field "exporter" in tracing`,
		`tracing.yaml:21: tracing address "otel_collector!:4317": "otel_collector!" is neither an IP address nor a DNS name`,
		`tracing.yaml:33: missing required field "address" in tracing`,
	}},
	// Consul tag and meta subsets: misuse is an error; mesh routes and a
	// Service's mesh split reach sidecars, which have no subsets.
	{"subsets.yaml", []string{
		"subsets.yaml:12: tags must list at least one Consul tag, or be omitted",
		`subsets.yaml:15: tag "v2" is listed twice`,
		"subsets.yaml:15: tags must not be empty strings",
		"subsets.yaml:16: meta must be a mapping of Consul meta keys to values, got a list",
		`subsets.yaml:19: meta "version" must be a string, got a list`,
		`subsets.yaml:19: meta keys must be non-empty strings, got the string ""`,
		"subsets.yaml:21: tags and meta select instances of a route's service; in a split, give them on each entry",
		`subsets.yaml:27: service "web" with the same tags and meta appears twice in split (also at testdata/bad/subsets.yaml:26)`,
		"subsets.yaml:28: meta must give at least one key and value, or be omitted",
		`subsets.yaml:29: warning: route reaches service "web" through the mesh, where the settings mesh split of its Service policy (testdata/bad/subsets.yaml:36) have no effect: what its sidecars serve decides the protocol, and the route's own timeout, retries and split apply`,
		"subsets.yaml:32: a route through the mesh (mesh: true) needs the Connect mesh, which is off; run serve --mesh (and validate --mesh), or remove it",
		"subsets.yaml:32: a route through the mesh reaches its services' sidecars, which cannot be chosen by tags or meta; drop mesh: true or the subsets",
		`subsets.yaml:39: unknown field "tags" in split entry`,
	}},
	// A Service's upstream settings: every value Envoy would refuse, and
	// hashOn (sticky sessions) on a service that a split reaches.
	{"upstream.yaml", []string{
		`upstream.yaml:12: service "web" hashes requests to instances (hashOn at testdata/bad/upstream.yaml:21), but a split picks its service or subset at random for each request, so a session would not stay on one instance; route to the service alone (a header match can pick the canary), or drop hashOn`,
		"upstream.yaml:21: invalid cookie name \"bad name\": use letters, digits and !#$%&'*+.^_`|~-",
		"upstream.yaml:21: ttl must be whole seconds (a cookie's Max-Age), got 1500ms",
		`upstream.yaml:21: cookie path must start with "/" and hold no ';' or space, got "nope"`,
		"upstream.yaml:21: hashOn needs policy ring_hash or maglev (consistent hashing), not round_robin",
		`upstream.yaml:27: unknown loadBalancer policy "fastest"; supported: round_robin, least_request, ring_hash, maglev, random`,
		"upstream.yaml:28: slowStart must be at least 1ms, got 0s",
		"upstream.yaml:29: hashOn may have only one of cookie, header or sourceIP, got header and sourceIP",
		"upstream.yaml:29: sourceIP must be true, or be omitted",
		"upstream.yaml:30: connectTimeout must be at least 1ms, got 0s",
		"upstream.yaml:31: idleTimeout must not be negative, got -1s",
		`upstream.yaml:32: unknown field "maxBatches" in circuitBreakers`,
		"upstream.yaml:32: maxConnections must be between 1 and 2147483647, got 0",
		`upstream.yaml:32: maxRequests must be an integer, got the string "many"`,
		"upstream.yaml:34: consecutive5xx must be between 1 and 1000, got 0",
		"upstream.yaml:35: baseEjectionTime 5m0s is longer than maxEjectionTime 2m0s; Envoy refuses that",
		"upstream.yaml:36: maxEjectionPercent must be between 0 and 100, got 101",
		`upstream.yaml:38: missing required field "path" in healthCheck`,
		"upstream.yaml:39: warning: healthCheck timeout 2s is longer than its interval 1s; checks will overlap",
		"upstream.yaml:40: unhealthyThreshold must be between 1 and 1000, got 0",
		`upstream.yaml:44: warning: Service "cart" is not routed to by any proxy group; its settings have no effect`,
		"upstream.yaml:47: slowStart works with policy round_robin or least_request only, not ring_hash",
		"upstream.yaml:48: warning: circuitBreakers sets nothing; the defaults apply",
		`upstream.yaml:49: healthCheck path must start with "/" and hold no space or '#', got "healthz"`,
	}},
	// Retry backoff, status codes and response headers: each list needs
	// its condition in on (added when on is omitted).
	{"retries.yaml", []string{
		"retries.yaml:15: status code 409 is listed twice",
		"retries.yaml:15: status code 99 is not between 100 and 599",
		"retries.yaml:15: status code 600 is not between 100 and 599",
		`retries.yaml:15: statusCodes items must be integers, got the string "503"`,
		"retries.yaml:15: statusCodes needs retry condition retriable-status-codes in on, or it is never used",
		"retries.yaml:16: headers must list at least one response header match, or be omitted",
		"retries.yaml:16: headers needs retry condition retriable-headers in on, or it is never used",
		`retries.yaml:21: warning: retry condition "retriable-headers" without headers retries only what a request lists in its x-envoy-retriable-header-names header`,
		`retries.yaml:22: missing required field "base" in backoff`,
		"retries.yaml:27: statusCodes must list at least one status code, or be omitted",
		`retries.yaml:28: invalid header name "bad header"`,
		`retries.yaml:29: unknown field "jitter" in backoff`,
		"retries.yaml:29: base must be at least 1ms, got 0s",
		"retries.yaml:34: backoff max 1s is shorter than base 2s",
	}},
	// Redirects: each part checked, impossible combinations refused, and
	// httpsRedirect warned about where it does nothing.
	{"redirect.yaml", []string{
		`redirect.yaml:11: redirect scheme "ftp": want http or https`,
		`redirect.yaml:11: invalid redirect host "shop.example.com:8443": want a host name such as shop.example.com or an IP address, without a port`,
		`redirect.yaml:11: port must be between 1 and 65535, got 0`,
		`redirect.yaml:11: redirect code 200: want 301, 302, 303, 307 or 308`,
		`redirect.yaml:13: redirect may have only one of path or prefix, got path and prefix`,
		`redirect.yaml:13: redirect path must start with "/", got "old/place"`,
		`redirect.yaml:15: invalid redirect host "[10.0.0.1]": want a host name such as shop.example.com or an IP address, without a port`,
		`redirect.yaml:15: redirect prefix replaces the path prefix the route matched, but the route matches by pathRegex; use path, or match by pathPrefix`,
		`redirect.yaml:17: redirect changes nothing, so clients would be sent back to the same URL forever; give at least one of scheme, host, port, path, prefix or stripQuery: true`,
		`redirect.yaml:20: route may have only one of service, split, redirect or directResponse, got service and redirect`,
		`redirect.yaml:20: redirect path "/new place" must not contain a space or '#'; percent-encode them (%20, %23)`,
		`redirect.yaml:21: timeout cannot be used with redirect: the route answers requests itself and never forwards them`,
		`redirect.yaml:23: unknown field "unknown" in redirect`,
		`redirect.yaml:23: invalid redirect host "2001:db8::1": write an IPv6 address in brackets, such as [2001:db8::1]`,
		`redirect.yaml:23: stripQuery must be true or false, got the string "yes"`,
		`redirect.yaml:24: retries cannot be used with redirect: the route answers requests itself and never forwards them`,
		`redirect.yaml:25: websocket cannot be used with redirect: the route answers requests itself and never forwards them`,
		`redirect.yaml:27: redirect must be a mapping, got the string "https"`,
		`redirect.yaml:30: warning: httpsRedirect has no effect on a listener that terminates TLS: its requests already use HTTPS`,
		`redirect.yaml:34: warning: httpsRedirect has no effect on a listener that terminates TLS: its requests already use HTTPS`,
		`redirect.yaml:36: warning: listener has no hosts; Envoy will answer every request with 404`,
		`redirect.yaml:38: httpsRedirect must be true or false, got the string "yes"`,
		`redirect.yaml:44: warning: host redirects every request to HTTPS (httpsRedirect on the host or its listener), and its listener does not terminate TLS, so its routes are never used`,
		`redirect.yaml:49: certFile testdata/bad/tls/missing.crt does not exist`,
		`redirect.yaml:50: keyFile testdata/bad/tls/missing.key does not exist`,
	}},
	{"rewrite.yaml", []string{
		`rewrite.yaml:12: rewrite prefix must start with "/", got "x"`,
		`rewrite.yaml:12: invalid rewrite host "shop.example.com:0": want a port from 1 to 65535 after the ':'`,
		`rewrite.yaml:15: rewrite may have only one of prefix or regex, got prefix and regex`,
		`rewrite.yaml:15: rewrite prefix replaces the path prefix the route matched, but the route matches by pathRegex; use regex, or match by pathPrefix`,
		`rewrite.yaml:18: substitution refers to group \2, but pattern has 1 group(s)`,
		`rewrite.yaml:18: invalid rewrite host "a b": want a host name such as shop.example.com or an IP address, optionally with a port`,
		"rewrite.yaml:21: invalid pattern \"(\": error parsing regexp: missing closing ): `(`",
		`rewrite.yaml:21: missing required field "substitution" in rewrite regex`,
		`rewrite.yaml:24: rewrite cannot be used with redirect: the route answers requests itself and never forwards them`,
		`rewrite.yaml:27: rewrite needs at least one of prefix, regex, host or hostFromUpstream`,
		`rewrite.yaml:30: unknown field "path" in rewrite`,
		`rewrite.yaml:30: invalid rewrite host "2001:db8::1": write an IPv6 address in brackets, such as [2001:db8::1]`,
	}},
	{"direct-response.yaml", []string{
		`direct-response.yaml:11: directResponse status 302 is a redirect, which needs a Location; use redirect instead`,
		`direct-response.yaml:13: status must be between 200 and 599, got 600`,
		`direct-response.yaml:13: invalid contentType "text html": want a media type such as text/html; charset=utf-8`,
		`direct-response.yaml:15: missing required field "status" in directResponse`,
		`direct-response.yaml:17: body must not contain control characters other than newline, carriage return and tab, got "a\x00b"`,
		`direct-response.yaml:19: route may have only one of service, split, redirect or directResponse, got service and directResponse`,
		`direct-response.yaml:21: retries cannot be used with directResponse: the route answers requests itself and never forwards them`,
		`direct-response.yaml:22: rewrite cannot be used with directResponse: the route answers requests itself and never forwards them`,
		`direct-response.yaml:24: route may have only one of service, split, redirect or directResponse, got redirect and directResponse`,
		`direct-response.yaml:26: timeout cannot be used with redirect: the route answers requests itself and never forwards them`,
		`direct-response.yaml:26: timeout cannot be used with directResponse: the route answers requests itself and never forwards them`,
		`direct-response.yaml:28: directResponse body is 4097 bytes, more than Envoy's limit of 4096`,
	}},
	{"headers.yaml", []string{
		`headers.yaml:10: requestHeaders: header "host" cannot be changed here; Envoy refuses pseudo-headers and host (use rewrite.host for the Host)`,
		`headers.yaml:10: requestHeaders: header ":path" cannot be changed here; Envoy refuses pseudo-headers and host (use rewrite.host for the Host)`,
		`headers.yaml:10: requestHeaders: invalid header name "bad name"`,
		`headers.yaml:11: requestHeaders: header "x-a" is named twice (in remove and remove); name each header once`,
		`headers.yaml:12: unknown field "drop" in responseHeaders`,
		`headers.yaml:12: responseHeaders needs at least one of set, add or remove`,
		`headers.yaml:17: requestHeaders: header "x-pct": a lone '%': write a literal percent sign as %%`,
		`headers.yaml:17: requestHeaders: header "x-odd": unknown dynamic value %UPSTREAM_HOST%; supported: %DOWNSTREAM_REMOTE_ADDRESS%, %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%, %DOWNSTREAM_LOCAL_ADDRESS%, %REQUESTED_SERVER_NAME%, %PROTOCOL%, %START_TIME%, %HOSTNAME%, %REQ(header)%, and %% for a literal %`,
		`headers.yaml:18: requestHeaders: header "x-id": %REQ(bad name)%: "bad name" is not a header name`,
		`headers.yaml:21: requestHeaders cannot be used with redirect: the route answers requests itself and never forwards them`,
		`headers.yaml:22: responseHeaders: header "x-a" is named twice (in set and remove); name each header once`,
		`headers.yaml:25: warning: responseHeaders: Envoy sets its own server header on every response, so changing it has no effect`,
		`headers.yaml:26: set must be a mapping of header names to values, got a list`,
		`headers.yaml:26: remove must be a list, got the string "x-b"`,
		`headers.yaml:30: responseHeaders changes 101 headers, more than 100`,
		`headers.yaml:31: responseHeaders: header "x-long": the value is 16385 bytes, more than Envoy's limit of 16384`,
	}},
	// Matches by method, header and query parameter; the routes after
	// one narrowed by them, or by case, are not called unreachable.
	{"match.yaml", []string{
		`match.yaml:12: caseInsensitive applies to pathPrefix and path; for pathRegex, start the regex with (?i)`,
		`match.yaml:13: unknown method "get"; supported: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT, TRACE (in capitals)`,
		`match.yaml:13: method POST is listed twice`,
		`match.yaml:16: methods must list at least one method, or be omitted for any`,
		`match.yaml:18: suffix must not be empty`,
		`match.yaml:19: header match may have only one of exact, prefix, suffix, contains, regex, present or absent, got prefix and contains`,
		`match.yaml:20: absent must be true; use present: true to match requests with the header`,
		`match.yaml:21: invert cannot be used with present or absent; use the other one`,
		`match.yaml:22: invert must be true or false, got the string "yes"`,
		`match.yaml:24: invalid query parameter name "a=b": it may not hold '&', '=', '#', '?' or a space`,
		`match.yaml:24: exact must not be empty; use present: true to match the parameter with any value`,
		`match.yaml:25: missing required field "name" in query parameter match`,
		"match.yaml:25: invalid regex \"(\": error parsing regexp: missing closing ): `(`",
		`match.yaml:26: present must be true (matching requests without a query parameter is not supported)`,
		`match.yaml:27: query parameter match may have only one of exact, regex or present, got exact and present`,
		`match.yaml:29: queryParams must be a list, got a mapping`,
	}},
	{"cors.yaml", []string{
		`cors.yaml:10: invalid origin "shop.example.com": want a scheme, host and optional port, such as https://shop.example.com or https://*.example.com, or "*" for any`,
		`cors.yaml:10: invalid origin "https://shop.example.com/": want a scheme, host and optional port, such as https://shop.example.com or https://*.example.com, or "*" for any`,
		`cors.yaml:10: origin "https://a.example.com" is listed twice`,
		`cors.yaml:11: unknown method "get"; supported: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT, TRACE (in capitals)`,
		`cors.yaml:11: method GET is listed twice`,
		`cors.yaml:12: allowHeaders: invalid header name "bad header"`,
		`cors.yaml:12: allowHeaders: header "content-type" is listed twice`,
		`cors.yaml:13: exposeHeaders: invalid header name ":status"`,
		`cors.yaml:14: maxAge must be whole seconds (browsers read it in seconds), got 1.5s`,
		`cors.yaml:15: allowCredentials with allowOrigins "*" would let every site make requests with its visitors' cookies; list the origins you trust`,
		`cors.yaml:19: unknown field "extra" in cors`,
		`cors.yaml:19: allowOrigins must list at least one origin`,
		`cors.yaml:19: invalid maxAge "soon": want a duration such as "2s" or "500ms"`,
		`cors.yaml:21: missing required field "allowOrigins" in cors`,
		`cors.yaml:21: allowMethods must list at least one method, or be omitted`,
	}},
	{"mirror.yaml", []string{
		`mirror.yaml:13: mirror service "web" is the route's own service, which would get each mirrored request twice`,
		`mirror.yaml:14: percent must be above 0 and at most 100, got 0`,
		`mirror.yaml:15: service "shadow" appears twice in mirror (also at testdata/bad/mirror.yaml:14)`,
		`mirror.yaml:15: percent must be above 0 and at most 100, got 100.5`,
		`mirror.yaml:16: percent 12.34567 has more than four decimals`,
		`mirror.yaml:17: invalid service name "bad name": use letters, digits, '_', '.' and '-', starting with a letter or digit`,
		`mirror.yaml:17: percent must be a number, got the string "10%"`,
		`mirror.yaml:18: missing required field "service" in mirror entry`,
		`mirror.yaml:21: mirror cannot be used with redirect: the route answers requests itself and never forwards them`,
		`mirror.yaml:24: mirror must list at least one service, or be omitted`,
		`mirror.yaml:27: mirror must be a list, got a mapping`,
		`mirror.yaml:30: a route through the mesh (mesh: true) needs the Connect mesh, which is off; run serve --mesh (and validate --mesh), or remove it`,
		`mirror.yaml:31: mirror cannot be used with mesh yet: mirrored requests would not go through the mesh`,
	}},
	{"request-limits.yaml", []string{
		`request-limits.yaml:7: maxHeadersKB must be between 1 and 8192, got 9000`,
		`request-limits.yaml:7: maxBodyBytes must be between 1 and 4294967295, got 0`,
		"request-limits.yaml:15: maxBodyBytes cannot be used on a listener with websocket: true: Envoy buffers a bounded body whole, and a WebSocket's stream never ends; allow WebSockets on the routes that need them instead (they are not bounded)",
		`request-limits.yaml:16: unknown field "maxHeaderKB" in requestLimits`,
		`request-limits.yaml:22: requestLimits needs at least one of maxHeadersKB or maxBodyBytes`,
		`request-limits.yaml:28: maxHeadersKB must be an integer, got the string "16KB"`,
		`request-limits.yaml:28: maxBodyBytes must be between 1 and 4294967295, got 5000000000`,
	}},
	{"ip-access.yaml", []string{
		"ip-access.yaml:7: xffTrustedHops must be between 0 and 10, got 11",
		"ip-access.yaml:8: allow must list at least one address or CIDR range, or be omitted",
		`ip-access.yaml:8: CIDR range "10.0.0.1/8" has address bits set beyond its /8; write 10.0.0.0/8`,
		`ip-access.yaml:8: invalid address or CIDR range "10.0.0.0/33": want an IP address such as 192.0.2.7 or a range such as 10.0.0.0/8 or 2001:db8::/32`,
		`ip-access.yaml:8: invalid address or CIDR range "localhost": want an IP address such as 192.0.2.7 or a range such as 10.0.0.0/8 or 2001:db8::/32`,
		`ip-access.yaml:8: invalid address or CIDR range "fe80::1%eth0": want an IP address such as 192.0.2.7 or a range such as 10.0.0.0/8 or 2001:db8::/32`,
		"ip-access.yaml:11: ipAccess needs at least one of allow or deny",
		`ip-access.yaml:15: allow "192.0.2.7/32" is the same range as "192.0.2.7" (line 15); list it once`,
		`ip-access.yaml:16: unknown field "except" in ipAccess`,
	}},
	{"client-rate-limit.yaml", []string{
		`client-rate-limit.yaml:7: unknown field "status" in rateLimitResponse`,
		`client-rate-limit.yaml:7: missing required field "body" in rateLimitResponse`,
		`client-rate-limit.yaml:7: invalid contentType "json": want a media type such as text/html; charset=utf-8`,
		`client-rate-limit.yaml:13: unknown rateLimit.by "user"; supported: clientIP, header, path`,
		"client-rate-limit.yaml:16: by: header needs header, the request header whose values get a bucket each (such as x-api-key)",
		"client-rate-limit.yaml:19: header is only used with by: header",
		"client-rate-limit.yaml:19: clients must be between 1 and 1000000, got 0",
		"client-rate-limit.yaml:22: clients is only used with by",
		`client-rate-limit.yaml:22: shadow must be true or false, got the string "yes"`,
		`client-rate-limit.yaml:25: invalid header name "x api key"`,
		`client-rate-limit.yaml:28: warning: rateLimitResponse has no effect: no host or route of this listener has a rateLimit or globalRateLimit`,
	}},
	// Global rate limits: each field checked, and a limit without the
	// group's rateLimitService to count it refused.
	{"global-rate-limit.yaml", []string{
		`global-rate-limit.yaml:4: unknown field "retries" in rateLimitService`,
		"global-rate-limit.yaml:4: rateLimitService may have only one of service or address, got service and address",
		"global-rate-limit.yaml:4: timeout must be at least 1ms, got 0s",
		`global-rate-limit.yaml:4: failureMode "closed": want allow or deny`,
		"global-rate-limit.yaml:10: requests must be between 1 and 4294967295, got 0",
		`global-rate-limit.yaml:10: globalRateLimit per "1s": want one of second, minute, hour, day (the rate limit service counts in fixed windows of a second, a minute, an hour or a day)`,
		"global-rate-limit.yaml:14: by lists clientIP twice (first at line 14)",
		"global-rate-limit.yaml:14: by lists header twice (first at line 14); a limit counts by one header",
		"global-rate-limit.yaml:17: by: header needs the header's name: write {header: x-api-key}",
		`global-rate-limit.yaml:20: unknown globalRateLimit by "user"; supported: clientIP, path, service, or {header: NAME}`,
		`global-rate-limit.yaml:20: invalid header name "x api"`,
		`global-rate-limit.yaml:20: unknown field "name" in by entry`,
		`global-rate-limit.yaml:20: missing required field "header" in by entry`,
		`global-rate-limit.yaml:20: shadow must be true or false, got the string "yes"`,
		"global-rate-limit.yaml:23: globalRateLimit must list at least one limit, or be omitted",
		"global-rate-limit.yaml:26: globalRateLimit cannot be used with redirect: the route answers requests itself and never forwards them",
		"global-rate-limit.yaml:30: by must list at least one of clientIP, path, service or {header: NAME}, or be omitted for one counter",
		`global-rate-limit.yaml:31: missing required field "requests" in globalRateLimit`,
		`global-rate-limit.yaml:31: unknown globalRateLimit by "7"; supported: clientIP, path, service, or {header: NAME}`,
		"global-rate-limit.yaml:41: globalRateLimit needs the proxy group's rateLimitService, which counts it: add rateLimitService with a service or an address",
		"global-rate-limit.yaml:44: globalRateLimit needs the proxy group's rateLimitService, which counts it: add rateLimitService with a service or an address",
		`global-rate-limit.yaml:49: rateLimitService address "ratelimit_svc:8081": "ratelimit_svc" is neither an IP address nor a DNS name`,
		"global-rate-limit.yaml:49: warning: timeout 5s is long: while the rate limit service is slow, every request with a global limit waits up to that long",
		"global-rate-limit.yaml:49: warning: rateLimitService has no effect: no host or route of this proxy group has a globalRateLimit",
		"global-rate-limit.yaml:60: rateLimitService needs one of service or address",
	}},
	{"fault.yaml", []string{
		`fault.yaml:13: a fault delay's duration must be above 0`,
		`fault.yaml:13: percent must be above 0 and at most 100, got 101`,
		`fault.yaml:14: status must be between 200 and 599, got 700`,
		`fault.yaml:18: missing required field "duration" in fault delay`,
		`fault.yaml:19: percent 0.00001 has more than four decimals`,
		`fault.yaml:22: fault needs at least one of delay or abort`,
		`fault.yaml:25: fault cannot be used with directResponse: the route answers requests itself and never forwards them`,
		`fault.yaml:28: fault delay must be a mapping, got the string "1s"`,
		`fault.yaml:28: unknown field "code" in fault abort`,
	}},
	// Only warnings: the set is still usable.
	{"warnings.yaml", []string{
		`warnings.yaml:5: warning: listener has no hosts; Envoy will answer every request with 404`,
		`warnings.yaml:10: warning: host has no routes; Envoy will answer its requests with 404`,
		`warnings.yaml:16: warning: retry condition "retriable-status-codes" without statusCodes retries only what a request lists in its x-envoy-retriable-status-codes header`,
		`warnings.yaml:16: warning: perTryTimeout 1s is not shorter than the route timeout 1s, so no retry can start before the route times out`,
		`warnings.yaml:17: warning: burst 10 is less than requests 100; the bucket holds at most 10 tokens, so at most 10 requests pass per 1s`,
		`warnings.yaml:18: warning: route is unreachable: the route at testdata/bad/warnings.yaml:13 matches all its requests first`,
	}},
}

func TestBadFiles(t *testing.T) {
	for _, tt := range badFiles {
		t.Run(tt.path, func(t *testing.T) {
			path := filepath.Join("testdata", "bad", tt.path)
			set, diags := policy.Load(path)
			want := make([]string, len(tt.want))
			for i, w := range tt.want {
				want[i] = "testdata/bad/" + w
			}
			if diff := cmp.Diff(want, lines(diags)); diff != "" {
				t.Errorf("Load(%q) diagnostics (-want +got):\n%s", path, diff)
			}
			if gotSet, wantSet := set != nil, !diags.HasErrors(); gotSet != wantSet {
				t.Errorf("Load(%q) returned a Set: %v; want %v", path, gotSet, wantSet)
			}
		})
	}
}

// TestEveryBadFileIsTested keeps the table above in step with testdata/bad.
func TestEveryBadFileIsTested(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "bad"))
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	for _, tt := range badFiles {
		want = append(want, tt.path)
	}
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("testdata/bad entries (-tested +present):\n%s", diff)
	}
}
