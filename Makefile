# Switchyard's build. `make demo` runs the local demo, `make test` every test.
GO        ?= go
BIN       := bin/switchyard
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
# Packages with golden files; `go test ./... -update` would fail elsewhere.
GOLDEN_PKGS := ./translator/ ./envoy/
STATICCHECK_VERSION := v0.8.2

export SWITCHYARD_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/switchyard

.PHONY: all build test test-compat golden demo tools lint bench clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/switchyard

## tools: install Consul, Envoy, envoyproxy/ratelimit and Redis into
## $(SWITCHYARD_CACHE) (idempotent)
tools:
	hack/tools.sh

## test: every test, against real Consul and Envoy, a short fixed fuzz of
## policy -> Envoy (its findings land in translator/testdata/fuzz), the
## demo's own check, then a smoke test against each older supported Envoy
test: tools build
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...
	$(GO) test -run '^$$' -fuzz FuzzPolicyToEnvoy -fuzztime 20s ./translator/
	DEMO_CHECK=1 hack/demo.sh
	hack/compat.sh

## test-compat: only the smoke test against each older supported Envoy
test-compat: tools build
	hack/compat.sh

golden:
	$(GO) test $(GOLDEN_PKGS) -run Golden -update

## bench: Go benchmarks of translation, rebuild and the xDS cache (against
## go-control-plane's caches), then the end-to-end propagation and fan-out
## benchmarks against real Consul and Envoy, the mesh fan-out against
## Switchyard and Consul's own xDS server, and the scale rows of issue 6:
## reconnect storm, flip soak, route add, bad proxies, many groups, and
## the latency a global rate limit adds (Envoy, ratelimit, Redis)
## (BENCH_ARGS, e.g. "-services 5000 -instances 4 -proxies 500 -sidecars
## 500 -mesh-services 100", sizes them; each benchmark's flags are in its
## doc comment). Figures: docs/benchmarks.md.
BENCH_ARGS ?=
bench: tools
	$(GO) test -run '^$$' -bench . -benchmem ./translator/ ./controlplane/
	$(GO) test -run '^$$' -bench . -benchtime 20x ./xdscache/
	$(GO) test -run '^$$' -bench 'Propagation|Fanout' -benchtime 40x -timeout 30m ./test/bench/ -args $(BENCH_ARGS)
	$(GO) test -run '^$$' -bench 'ReconnectStorm|FlipSoak' -benchtime 1x -timeout 30m ./test/bench/ -args $(BENCH_ARGS)
	$(GO) test -run '^$$' -bench 'RouteAdd|BadProxies|ManyGroups' -benchtime 20x -timeout 30m ./test/bench/ -args $(BENCH_ARGS)
	$(GO) test -run '^$$' -bench GlobalRateLimitLatency -benchtime 5000x ./envoy/

demo: tools build
	hack/demo.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

clean:
	rm -rf bin
