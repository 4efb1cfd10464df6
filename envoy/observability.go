package envoy

import (
	"fmt"
	"maps"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// Access logger extension names.
const (
	fileAccessLogName   = "envoy.access_loggers.file"
	stdoutAccessLogName = "envoy.access_loggers.stdout"
	stderrAccessLogName = "envoy.access_loggers.stderr"
)

// AccessLogFields are the keys of a JSON access log line and the Envoy
// command operator behind each. Operators that stand alone give typed
// values (status and durations are numbers); a missing value is null.
var AccessLogFields = map[string]string{
	"start_time":       "%START_TIME%",
	"method":           "%REQ(:METHOD)%",
	"path":             "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
	"protocol":         "%PROTOCOL%",
	"authority":        "%REQ(:AUTHORITY)%",
	"status":           "%RESPONSE_CODE%",
	"response_flags":   "%RESPONSE_FLAGS%",
	"duration_ms":      "%DURATION%",
	"upstream_time_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
	"bytes_received":   "%BYTES_RECEIVED%",
	"bytes_sent":       "%BYTES_SENT%",
	"route":            "%ROUTE_NAME%",
	"upstream_cluster": "%UPSTREAM_CLUSTER%",
	"upstream_host":    "%UPSTREAM_HOST%",
	"request_id":       "%REQ(X-REQUEST-ID)%",
	"client_address":   "%DOWNSTREAM_REMOTE_ADDRESS%",
	"user_agent":       "%REQ(USER-AGENT)%",
	"listener":         "%DOWNSTREAM_LOCAL_ADDRESS%",
}

// MeshAccessLogFields are the keys a sidecar's JSON lines add to
// AccessLogFields (and TCPAccessLogFields): the SPIFFE IDs that mutual TLS
// verified. On a public listener the caller's is known; on an upstream
// listener, the destination sidecar's. The other end is a local
// application over plain text: null.
var MeshAccessLogFields = map[string]string{
	"client_spiffe_id":   "%DOWNSTREAM_PEER_URI_SAN%",
	"upstream_spiffe_id": "%UPSTREAM_PEER_URI_SAN%",
}

// TCPAccessLogFields are the keys of AccessLogFields that a TCP proxy
// has: one line per connection, when it closes. A TCP connection has no
// method, path, status or headers.
var TCPAccessLogFields = []string{
	"start_time", "response_flags", "duration_ms", "bytes_received", "bytes_sent",
	"upstream_cluster", "upstream_host", "client_address", "listener",
}

// meshAccessLogs is a sidecar listener's access log config (its HTTP
// connection manager's, or with tcp its TCP proxy's), or nil.
func meshAccessLogs(a *ir.AccessLog, tcp bool) ([]*accesslogv3.AccessLog, error) {
	if a == nil {
		return nil, nil
	}
	fields := maps.Clone(MeshAccessLogFields)
	if tcp {
		for _, k := range TCPAccessLogFields {
			fields[k] = AccessLogFields[k]
		}
	} else {
		maps.Copy(fields, AccessLogFields)
	}
	return accessLogsWith(a, fields)
}

// accessLogs is a listener's access log config, or nil when it has none.
func accessLogs(a *ir.AccessLog) ([]*accesslogv3.AccessLog, error) {
	return accessLogsWith(a, AccessLogFields)
}

// accessLogsWith is an access log config whose JSON lines have the given
// keys and command operators, or nil for a nil a.
func accessLogsWith(a *ir.AccessLog, jsonFields map[string]string) ([]*accesslogv3.AccessLog, error) {
	if a == nil {
		return nil, nil
	}
	var format *corev3.SubstitutionFormatString
	switch a.Format {
	case "json":
		fields := map[string]any{}
		for k, v := range jsonFields {
			fields[k] = v
		}
		js, err := structpb.NewStruct(fields)
		if err != nil {
			return nil, err
		}
		format = &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: js}}
	case "text":
		// nil: Envoy's default format.
	default:
		return nil, fmt.Errorf("access log format %q: want json or text", a.Format)
	}
	var name string
	var cfg proto.Message
	switch a.Path {
	case "stdout":
		l := &streamv3.StdoutAccessLog{}
		if format != nil {
			l.AccessLogFormat = &streamv3.StdoutAccessLog_LogFormat{LogFormat: format}
		}
		name, cfg = stdoutAccessLogName, l
	case "stderr":
		l := &streamv3.StderrAccessLog{}
		if format != nil {
			l.AccessLogFormat = &streamv3.StderrAccessLog_LogFormat{LogFormat: format}
		}
		name, cfg = stderrAccessLogName, l
	default:
		l := &filev3.FileAccessLog{Path: a.Path}
		if format != nil {
			l.AccessLogFormat = &filev3.FileAccessLog_LogFormat{LogFormat: format}
		}
		name, cfg = fileAccessLogName, l
	}
	return []*accesslogv3.AccessLog{{
		Name:       name,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(cfg)},
	}}, nil
}

// openTelemetryTracerName is Envoy's OpenTelemetry tracer extension.
const openTelemetryTracerName = "envoy.tracers.opentelemetry"

// tracing is a listener's OpenTelemetry tracing: spans over OTLP/gRPC to
// the collector's cluster, for the sampled percentage of requests (Envoy
// also traces a request that arrives with a sampled trace context, and
// passes the context upstream as traceparent), or nil.
func tracing(t *ir.Tracing) *hcmv3.HttpConnectionManager_Tracing {
	if t == nil {
		return nil
	}
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: float64(t.Sampling)},
		Provider: &tracev3.Tracing_Http{
			Name: openTelemetryTracerName,
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(&tracev3.OpenTelemetryConfig{
				GrpcService: &corev3.GrpcService{
					TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ClusterName(t.Cluster)}},
					Timeout:         durationpb.New(time.Second),
				},
				ServiceName: t.ServiceName,
			})},
		},
	}
}
