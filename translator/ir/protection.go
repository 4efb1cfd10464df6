package ir

// MaxRequestHeadersKB is the largest Listener.MaxRequestHeadersKB Envoy
// accepts.
const MaxRequestHeadersKB = 8192
