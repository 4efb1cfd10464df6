package envoy

import (
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// RateLimitConfigs: TEMPORARY stub until rlpolicy merges.
func RateLimitConfigs(cfg *ir.Config) []*rlsconfv3.RateLimitConfig { return nil }
