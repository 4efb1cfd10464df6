package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/internal/safefile"
)

// Defaults for Config fields left zero.
const (
	DefaultAddress    = "127.0.0.1:8500"
	DefaultWaitTime   = 5 * time.Minute
	DefaultBackoffMin = 250 * time.Millisecond
	DefaultBackoffMax = 10 * time.Second
	DefaultStaleHold  = 5 * time.Minute

	// DefaultMaxServiceWatches is how many services get a blocking query
	// of their own over plain HTTP (Config.MaxServiceWatches 0): well
	// under Consul's default cap of 200 connections per client address,
	// leaving room for the shared queries, the re-reads (sharedReaders),
	// a MeshWatcher and other clients on the same host.
	DefaultMaxServiceWatches = 100

	// DefaultMaxMeshWatches is how many of a MeshWatcher's per-name
	// blocking queries (a proxy service's, a destination's two, a leaf's)
	// it runs over plain HTTP (Config.MaxMeshWatches 0); the rest are
	// multiplexed. With its 10 other connections (the proxy list, roots,
	// intentions, two health-state queries, four readers, the agent's
	// ACL settings) the mesh holds at most 50, and with the Watcher's
	// DefaultMaxServiceWatches + 7 the two hold at most 157: well under
	// Consul's default cap of 200 per client address, leaving room for
	// other clients on the same host.
	DefaultMaxMeshWatches = 40

	// maxWaitTime is the longest blocking query Consul serves.
	maxWaitTime = 10 * time.Minute
)

// Config says which Consul to watch and how patiently.
type Config struct {
	Address string // Consul HTTP address, host:port (default "127.0.0.1:8500")
	Scheme  string // "http" (default) or "https"
	Token   string // ACL token; never logged or put in errors
	// TokenFile holds the ACL token instead (read once, by NewWatcher),
	// so it appears in no flag, environment or settings file.
	TokenFile  string
	Datacenter string        // default: the agent's
	AllowStale bool          // stale reads for blocking queries
	WaitTime   time.Duration // blocking query wait (default 5m, Consul's max 10m)
	BackoffMin time.Duration // default 250ms
	BackoffMax time.Duration // default 10s; exponential with full jitter between them
	// StaleHold is how long fail-static keeps last-known instances after a
	// suspect empty answer (default 5m; 0 = use default; negative = forever).
	StaleHold time.Duration
	// MaxServiceWatches is the most services watched with a blocking
	// query of their own; the others are multiplexed (see the package
	// doc, "Watching"). 0 means DefaultMaxServiceWatches over plain HTTP
	// and no limit over HTTPS, where the queries share HTTP/2
	// connections; negative is an error.
	MaxServiceWatches int
	// MaxMeshWatches is the most per-name blocking queries a MeshWatcher
	// runs (one per proxy service, two per destination, one per leaf
	// certificate); the others are multiplexed (see the package doc,
	// "Mesh"). 0 means DefaultMaxMeshWatches over plain HTTP and no limit
	// over HTTPS; negative is an error. A Watcher ignores it.
	MaxMeshWatches int

	// TLS, with Scheme "https". CAFile verifies the agent's certificate
	// (default: the system's roots); CertFile and KeyFile, together, are a
	// client certificate for agents that verify incoming connections;
	// TLSServerName is the name to verify instead of Address's host.
	//
	// Over TLS the blocking queries share HTTP/2 connections (Consul's
	// HTTPS API speaks it): hundreds of watches need a few connections,
	// not one each, so Consul's cap on connections per client does not
	// apply, and every service may have a query of its own.
	CAFile, CertFile, KeyFile, TLSServerName string
}

// String describes the config with the token redacted, so that printing a
// Config with fmt cannot leak it.
func (c Config) String() string {
	return fmt.Sprintf("{Address:%s Scheme:%s Token:%s TokenFile:%s Datacenter:%s AllowStale:%t WaitTime:%s BackoffMin:%s BackoffMax:%s StaleHold:%s MaxServiceWatches:%d MaxMeshWatches:%d CAFile:%s CertFile:%s KeyFile:%s TLSServerName:%s}",
		c.Address, c.Scheme, redacted(c.Token), c.TokenFile, c.Datacenter, c.AllowStale, c.WaitTime, c.BackoffMin, c.BackoffMax, c.StaleHold, c.MaxServiceWatches, c.MaxMeshWatches,
		c.CAFile, c.CertFile, c.KeyFile, c.TLSServerName)
}

// GoString is String, for %#v.
func (c Config) GoString() string { return "registry.Config" + c.String() }

// LogValue logs the config with the token redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("address", c.Address),
		slog.String("scheme", c.Scheme),
		slog.String("token", redacted(c.Token)),
		slog.String("token_file", c.TokenFile),
		slog.String("datacenter", c.Datacenter),
		slog.Bool("allow_stale", c.AllowStale),
		slog.Duration("wait_time", c.WaitTime),
		slog.Duration("backoff_min", c.BackoffMin),
		slog.Duration("backoff_max", c.BackoffMax),
		slog.Duration("stale_hold", c.StaleHold),
		slog.Int("max_service_watches", c.MaxServiceWatches),
		slog.Int("max_mesh_watches", c.MaxMeshWatches),
		slog.String("ca_file", c.CAFile),
		slog.String("cert_file", c.CertFile),
		slog.String("key_file", c.KeyFile),
		slog.String("tls_server_name", c.TLSServerName),
	)
}

func redacted(token string) string {
	if token == "" {
		return ""
	}
	return "[redacted]"
}

func (c Config) withDefaults() (Config, error) {
	if c.Address == "" {
		c.Address = DefaultAddress
	}
	switch c.Scheme {
	case "":
		c.Scheme = "http"
	case "http", "https":
	default:
		return c, fmt.Errorf("consul scheme %q: want http or https", c.Scheme)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return c, errors.New("consul client certificate: cert file and key file go together; give both or neither")
	}
	if c.Scheme != "https" && (c.CAFile != "" || c.CertFile != "" || c.TLSServerName != "") {
		return c, fmt.Errorf("consul TLS settings (CA file, client certificate, server name) need scheme https, not %q", c.Scheme)
	}
	switch {
	case c.WaitTime == 0:
		c.WaitTime = DefaultWaitTime
	case c.WaitTime < 0 || c.WaitTime > maxWaitTime:
		return c, fmt.Errorf("consul wait time %s: want between 0 and %s", c.WaitTime, maxWaitTime)
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = max(DefaultBackoffMax, c.BackoffMin)
	}
	if c.BackoffMin < 0 || c.BackoffMax < c.BackoffMin {
		return c, fmt.Errorf("consul backoff %s..%s: want 0 < min <= max", c.BackoffMin, c.BackoffMax)
	}
	if c.StaleHold == 0 {
		c.StaleHold = DefaultStaleHold
	}
	if c.MaxServiceWatches < 0 {
		return c, fmt.Errorf("consul max service watches %d: want 0 (the default) or more", c.MaxServiceWatches)
	}
	if c.MaxMeshWatches < 0 {
		return c, fmt.Errorf("consul max mesh watches %d: want 0 (the default) or more", c.MaxMeshWatches)
	}
	return c, nil
}

// Hooks let the control plane count events without this package importing
// prometheus. All are optional (nil = ignored). They are called from watcher
// goroutines, never while a lock is held; they must be cheap and safe for
// concurrent use.
type Hooks struct {
	// WatchError is called for every failed query; op is "services",
	// "health:<service>", "health-state" or "read:<service>" (Watcher), or "mesh:services", "mesh:proxy:<name>",
	// "mesh:connect:<service>", "mesh:service:<service>", "mesh:roots",
	// "mesh:leaf:<service>", "mesh:intentions", "mesh:agent-self",
	// "mesh:health-state:<state>" or "mesh:read:<proxy|connect|service|leaf>:<name>"
	// (MeshWatcher). err never contains the token, nor a private key.
	WatchError func(op string, err error)
	// FailStatic is called when a service's last known instances (or a
	// proxy service's sidecars, a destination's endpoints, or the
	// intentions, as "service-intentions") are kept instead of a suspect
	// empty answer.
	FailStatic func(service string, reason string)
	// SidecarProblem is called once per problem of a sidecar registration
	// (see Sidecar.Problems and Upstream.Problem) when the registration
	// first shows it, by MeshWatcher only. Problems of a service-intentions
	// entry (Intentions.Problems, and L7 permissions meeting a tcp
	// sidecar) come here too, with proxyID "intentions:<destination>".
	SidecarProblem func(proxyID string, problem string)
	// Request is called after every Consul request, with its kind
	// ("services", "health", "health-state" and "read" from a Watcher,
	// "mesh" (its blocking queries) and "mesh-read" (re-reads of
	// multiplexed entries) from a MeshWatcher) and result: "ok", "throttled" (Consul
	// answered 429 Too Many Requests) or "error". Their rate is the load
	// Switchyard puts on Consul.
	Request func(kind, result string)
	// Watches is called with +1 when a watch starts and -1 when it stops,
	// by kind: "services", "health" (a service with a blocking query of
	// its own), "health-state" (the two shared queries, on the critical
	// and on the warning checks) and "mesh" (every MeshWatcher blocking
	// query, its health-state ones included) are blocking queries, each
	// holding a connection over plain HTTP; "multiplexed" counts services
	// watched without one (through "health-state", "services" and
	// re-reads), "mesh-multiplexed" the MeshWatcher's proxy services,
	// destinations and leaves watched without one.
	Watches func(kind string, delta int)
}

// Request kinds and results, as Hooks.Request reports them.
const (
	KindServices    = "services"
	KindHealth      = "health"
	KindHealthState = "health-state"
	KindRead        = "read"
	KindMesh        = "mesh"
	KindMultiplexed = "multiplexed"
	// KindMeshRead is a MeshWatcher's plain re-read of a multiplexed
	// proxy service, destination or leaf; KindMeshMultiplexed counts the
	// mesh entries watched without a blocking query of their own.
	KindMeshRead        = "mesh-read"
	KindMeshMultiplexed = "mesh-multiplexed"

	ResultOK        = "ok"
	ResultThrottled = "throttled"
	ResultError     = "error"
)

// opKind is the kind of a query loop's op ("health:web" is "health").
func opKind(op string) string {
	kind, _, _ := strings.Cut(op, ":")
	return kind
}

// requestResult classifies a request's outcome for Hooks.Request.
func requestResult(err error) string {
	var se consulapi.StatusError
	switch {
	case err == nil:
		return ResultOK
	case errors.As(err, &se) && se.Code == http.StatusTooManyRequests:
		return ResultThrottled
	default:
		return ResultError
	}
}

func (h Hooks) request(kind string, err error) {
	if h.Request != nil {
		h.Request(kind, requestResult(err))
	}
}

func (h Hooks) watches(kind string, delta int) {
	if h.Watches != nil && delta != 0 {
		h.Watches(kind, delta)
	}
}

// Watcher watches one Consul datacenter. Create it with NewWatcher and call
// Run once.
type Watcher struct {
	cfg     Config
	client  *consulapi.Client
	log     *slog.Logger
	hooks   Hooks
	http    *http.Transport
	timeout time.Duration // per request: the blocking wait plus Consul's jitter and slack
	pool    int           // most services with a query of their own; 0: no limit
	running atomic.Bool
	// lost counts the signs that a connection to Consul was lost: a
	// connection the agent closed (conns.go), a failed query, a silent
	// retry. Every query compares it with its value at its own previous
	// answer, so one connection lost makes every watch's next answer
	// suspect, including a watch that was between queries when the agent
	// restarted and reached the new agent without an error of its own.
	lost *lossCounter

	mu   sync.Mutex      // guards want and st; taken before st.mu, never after
	want map[string]bool // nil: every service (Want never called)
	st   *state          // the running Run's state; nil when not running
}

// Want restricts the watcher to the named services (the ones the policy
// routes to). Until Want is first called the watcher watches every service
// in the catalog, as before. Safe to call at any time, from any goroutine,
// before or during Run; the latest call wins.
//
// Once Want has been called, only services both wanted and listed in the
// catalog are watched; an empty or nil list watches none. A service no
// longer wanted has its watch stopped and leaves the next snapshot (it is
// not a fail-static case). A newly wanted service that the last catalog
// answer listed is watched at once, without waiting for the catalog query
// to return; snapshots published before its first health answer arrives do
// not cover it (see Snapshot.Covers). There is no way back to watching
// every service, short of a new Watcher.
func (w *Watcher) Want(services []string) {
	want := make(map[string]bool, len(services))
	for _, name := range services {
		want[name] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.want = want
	if w.st != nil {
		w.st.applyWant(want)
	}
}

// watched returns the services whose health the running Run watches, sorted
// (nil when not running). For tests.
func (w *Watcher) watched() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.st == nil {
		return nil
	}
	w.st.mu.Lock()
	defer w.st.mu.Unlock()
	return slices.Sorted(maps.Keys(w.st.services))
}

// pooled returns the services with a blocking query of their own, sorted
// (nil when not running). For tests.
func (w *Watcher) pooled() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.st == nil {
		return nil
	}
	w.st.mu.Lock()
	defer w.st.mu.Unlock()
	var out []string
	for name, ss := range w.st.services {
		if ss.cancel != nil {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// NewWatcher checks cfg, fills in defaults and builds a Consul client. It
// does not contact Consul. A nil log discards.
func NewWatcher(cfg Config, log *slog.Logger, hooks Hooks) (*Watcher, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("registry config: %w", err)
	}
	if cfg.TokenFile != "" {
		if cfg.Token != "" {
			return nil, errors.New("registry config: give the consul token or the token file, not both")
		}
		b, err := safefile.Read(cfg.TokenFile, safefile.FileLimit)
		if err != nil {
			return nil, fmt.Errorf("consul token file: %w", err) // names the file, not its content
		}
		if cfg.Token = strings.TrimSpace(string(b)); cfg.Token == "" {
			return nil, fmt.Errorf("consul token file %s is empty", cfg.TokenFile)
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	// Over plain HTTP/1.1, one connection per concurrent query (the
	// pool's, the catalog's, the health-state query's and the readers'):
	// keep them all idle-pooled instead of reconnecting after every answer. Over https
	// the transport negotiates HTTP/2 (Consul's HTTPS API speaks it), and
	// the queries share a few connections, a new one per 250 streams (Go's
	// default limit on a server). The token travels in the X-Consul-Token
	// header (consulapi sets it from Config.Token), never in the URL, so
	// errors that quote the URL cannot leak it.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.ForceAttemptHTTP2 = true
	transport.MaxIdleConns = 0
	transport.MaxIdleConnsPerHost = 4096
	// Set here, not left to consulapi: it keeps a transport's TLS config
	// when one is there, and a clone of http.DefaultTransport has one once
	// anything in the process has used it.
	//
	// The files are read here, within safefile's checks (a regular file of
	// at most 1 MiB, never a FIFO that would hang the start), and handed
	// over as bytes.
	tlsFiles := &consulapi.TLSConfig{Address: cfg.TLSServerName}
	for _, f := range []struct {
		what, path string
		into       *[]byte
	}{
		{"consul CA file", cfg.CAFile, &tlsFiles.CAPem},
		{"consul certificate file", cfg.CertFile, &tlsFiles.CertPEM},
		{"consul key file", cfg.KeyFile, &tlsFiles.KeyPEM},
	} {
		if f.path == "" {
			continue
		}
		b, err := safefile.Read(f.path, safefile.FileLimit)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.what, err) // names the file, not its content
		}
		*f.into = b
	}
	if (tlsFiles.CertPEM == nil) != (tlsFiles.KeyPEM == nil) {
		return nil, fmt.Errorf("consul TLS: give both a certificate file and a key file, or neither (certificate %q, key %q)", cfg.CertFile, cfg.KeyFile)
	}
	tlsConfig, err := consulapi.SetupTLSConfig(tlsFiles)
	if err != nil {
		return nil, fmt.Errorf("consul TLS (CA file %q, certificate %q, key %q): %w", cfg.CAFile, cfg.CertFile, cfg.KeyFile, err)
	}
	transport.TLSClientConfig = tlsConfig
	address := cfg.Address
	if path, ok := strings.CutPrefix(address, "unix://"); ok {
		// consulapi would make a transport of its own for a socket,
		// without the pool settings above or the loss counter below:
		// ours dials the socket instead.
		transport.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		address = "localhost"
	}
	client, err := consulapi.NewClient(&consulapi.Config{
		Address:    address,
		Scheme:     cfg.Scheme,
		Datacenter: cfg.Datacenter,
		Token:      cfg.Token,
		Transport:  transport,
	})
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", cfg.Address, redactErr(err, cfg.Token))
	}
	lost := &lossCounter{}
	transport.DialContext = lost.dialer(transport.DialContext)
	pool := cfg.MaxServiceWatches
	if pool == 0 && cfg.Scheme == "http" {
		pool = DefaultMaxServiceWatches
	}
	if pool > 0 {
		// The most requests a Watcher has in flight: its pool, the catalog
		// query, the health-state queries and the readers. A guard, so that a
		// connection on its way back to the idle pool is waited for
		// rather than a new one opened past the budget.
		transport.MaxConnsPerHost = pool + 1 + len(watchedStates) + sharedReaders
	}
	return &Watcher{
		cfg:    cfg,
		client: client,
		log:    log,
		hooks:  hooks,
		http:   transport,
		pool:   pool,
		lost:   lost,
		// Consul adds up to WaitTime/16 of jitter to a blocking query; the
		// slack covers a slow agent. Past that the connection is presumed
		// dead (a partition without a reset), and the query is retried.
		timeout: cfg.WaitTime + cfg.WaitTime/8 + 15*time.Second,
	}, nil
}

// Run watches until ctx is done, calling publish with each new snapshot.
//
// publish is called from one goroutine at a time, never concurrently, and
// never with a snapshot equal to the previous one. The first call happens
// only after the initial full sync: the service list and the health of
// every listed service (every wanted one, once Want was called) read once.
// Run returns nil when ctx is cancelled; every goroutine it started has
// exited by then. Run may not be called again while it runs.
func (w *Watcher) Run(ctx context.Context, publish func(*Snapshot)) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("registry watcher is already running")
	}
	defer w.running.Store(false)
	// Idle keep-alive connections have goroutines of their own (net/http's).
	defer w.http.CloseIdleConnections()

	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	st := &state{
		w:        w,
		wg:       &wg,
		ctx:      ctx,
		services: map[string]*svcState{},
		changed:  make(chan struct{}, 1),
		pool:     w.pool,
		sh:       newShared(),
	}
	// Run's last act, once every goroutine is gone: the multiplexed
	// services leave the count (each query loop reports its own end).
	defer st.unreportMultiplexed()
	defer wg.Wait() // runs after cancel below: defers are last in, first out
	defer cancel()

	// Want calls reach this state from now until Run returns. Detaching
	// (under w.mu, so no Want is half done) runs first among the deferred
	// calls, before cancel and wg.Wait: no Want starts a watch once the
	// group is being waited for.
	w.mu.Lock()
	st.want, w.st = w.want, st
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.st = nil
		w.mu.Unlock()
	}()
	wg.Go(func() { w.watchCatalog(ctx, st) })
	w.publishLoop(ctx, st, publish)
	return nil
}

// publishLoop is the one goroutine that calls publish. Watchers only mark
// the state changed (a non-blocking send on a one-slot channel), so a burst
// of changes while publish runs becomes one snapshot, and a slow publish
// never stalls a watch.
func (w *Watcher) publishLoop(ctx context.Context, st *state, publish func(*Snapshot)) {
	var (
		last      *Snapshot
		published bool
		expiry    = time.NewTimer(time.Hour)
	)
	defer expiry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.changed:
		case <-expiry.C:
			st.expireHolds()
		}
		snap, ready, next := st.snapshot()
		if !next.IsZero() {
			expiry.Reset(max(time.Until(next), time.Millisecond))
		} else {
			expiry.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		if !ready && !published {
			continue
		}
		if published && snap.Equal(last) {
			continue
		}
		publish(snap)
		last, published = snap, true
	}
}

// Reasons an answer is suspect: why an empty answer might come from a
// Consul that lost its state rather than from a real deregistration (see the
// package doc). A trustworthy answer's reason is "".
const (
	reasonIndexReset = "consul index went backwards (agent restarted or state reset)"
	reasonReconnect  = "first answer after losing the connection to consul"
	reasonNoLeader   = "consul has no known leader"
)

// loop runs one blocking query over and over until ctx is done: query is
// called with the options to use, and handle with each successful answer
// and the reason it is suspect ("" if it is not).
//
// Index handling follows Consul's blocking query guidance: the next query
// waits on the index of the last answer; an index that went backwards or is
// 0 resets the wait index to 0. After a failed query the wait index is also
// reset: the agent may have restarted, and a query waiting on the old
// incarnation's index would block until the new one caught up, hiding the
// reset. An answer that returns quickly without the index moving forward is
// followed by a growing pause, so a misbehaving agent or proxy cannot make
// the loop spin.
func (w *Watcher) loop(ctx context.Context, op string, query func(*consulapi.QueryOptions) (*consulapi.QueryMeta, error), handle func(suspect string)) {
	var (
		waitIndex, lastIndex uint64
		reconnect            bool  // the previous query failed
		answered             bool  // a query has succeeded
		lostSeen             int64 // w.lost when the previous answer's query went out
		failures, idle       int
		lastWarn             time.Time
		lastErr              string
		kind                 = opKind(op)
	)
	w.hooks.watches(kind, 1)
	defer w.hooks.watches(kind, -1)
	for ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, w.timeout)
		// Count the connections this query used. net/http silently retries
		// a GET whose pooled connection broke before the answer (an agent
		// going away does exactly that), so a restarted agent can answer
		// without any error reaching us: a second connection is the sign.
		var conns atomic.Int32
		qctx = httptrace.WithClientTrace(qctx, &httptrace.ClientTrace{
			GotConn: func(httptrace.GotConnInfo) { conns.Add(1) },
		})
		opts := (&consulapi.QueryOptions{
			AllowStale: w.cfg.AllowStale,
			WaitIndex:  waitIndex,
			WaitTime:   w.cfg.WaitTime,
		}).WithContext(qctx)
		// Read before asking: a loss counted while the query runs, even
		// just after the old agent answered it, makes the next answer
		// suspect too.
		issued := w.lost.load()
		start := time.Now()
		meta, err := query(opts)
		took := time.Since(start)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil && meta == nil {
			err = errors.New("no query metadata")
		}
		w.hooks.request(kind, err)
		if err != nil {
			failures++
			err = redactErr(err, w.cfg.Token)
			if w.hooks.WatchError != nil {
				w.hooks.WatchError(op, err)
			}
			delay := w.backoff(failures)
			// Warn on the first failure, when the error changes and every
			// 30 s: with hundreds of watches failing together (Consul is
			// down), one line per retry would bury everything else.
			level := slog.LevelDebug
			if failures == 1 || err.Error() != lastErr || time.Since(lastWarn) >= 30*time.Second {
				level, lastWarn, lastErr = slog.LevelWarn, time.Now(), err.Error()
			}
			w.log.Log(ctx, level, "consul query failed; keeping last known state",
				"op", op, "error", err, "failures", failures, "retry_in", delay)
			waitIndex, reconnect = 0, true
			w.lost.add()
			if !sleep(ctx, delay) {
				return
			}
			continue
		}
		if failures > 0 {
			w.log.Info("consul query recovered", "op", op, "failures", failures)
			failures, lastErr = 0, ""
		}

		retried := conns.Load() > 1
		if retried {
			w.lost.add() // tell the other watches
		}
		lostNow := w.lost.load()
		var suspect string
		switch {
		case meta.LastIndex != 0 && meta.LastIndex < lastIndex:
			suspect = reasonIndexReset
		case reconnect || retried || (answered && lostNow != lostSeen):
			suspect = reasonReconnect
		case !meta.KnownLeader && meta.QueryBackend != consulapi.QueryBackendStreaming:
			// The streaming backend, which serves blocking health queries
			// by default since Consul 1.10, never sets KnownLeader.
			suspect = reasonNoLeader
		}
		reconnect, answered, lostSeen = false, true, issued
		handle(suspect)

		quiet := meta.LastIndex == 0 || (waitIndex != 0 && meta.LastIndex <= waitIndex)
		switch {
		case meta.LastIndex == 0 || meta.LastIndex < lastIndex:
			waitIndex = 0
		default:
			waitIndex = meta.LastIndex
		}
		if meta.LastIndex != 0 {
			lastIndex = meta.LastIndex
		}
		if quiet && took < w.cfg.BackoffMin {
			idle++
			if !sleep(ctx, w.backoff(idle)) {
				return
			}
		} else {
			idle = 0
		}
	}
}

// backoff returns the pause before retry n (1, 2, ...): uniform between
// BackoffMin and min(BackoffMax, BackoffMin*2^(n-1)). Jitter spreads the
// retries of many watches so a recovering agent is not hit all at once.
func (w *Watcher) backoff(n int) time.Duration {
	lo, hi := w.cfg.BackoffMin, w.cfg.BackoffMin
	for i := 1; i < n && hi < w.cfg.BackoffMax; i++ {
		hi *= 2
	}
	hi = min(hi, w.cfg.BackoffMax)
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// redactErr replaces the token in err's text, should it ever appear there.
// consulapi puts the token in a header, not the URL, so this is a second
// line of defence for errors from proxies or future client versions.
func redactErr(err error, token string) error {
	if err == nil || token == "" || !strings.Contains(err.Error(), token) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), token, "[redacted]"))
}

// watchCatalog watches the service list, starting and stopping the
// per-service watches.
func (w *Watcher) watchCatalog(ctx context.Context, st *state) {
	var (
		names map[string][]string
		meta  *consulapi.QueryMeta
	)
	w.loop(ctx, KindServices,
		func(opts *consulapi.QueryOptions) (*consulapi.QueryMeta, error) {
			var err error
			names, meta, err = w.client.Catalog().Services(opts)
			return meta, err
		},
		func(suspect string) { st.applyCatalog(names, meta.LastIndex, suspect) })
}

// watchService watches one service's instances and health until ctx is
// cancelled (the service left the catalog for good, or is no longer wanted).
func (w *Watcher) watchService(ctx context.Context, st *state, ss *svcState) {
	var entries []*consulapi.ServiceEntry
	w.loop(ctx, "health:"+ss.name,
		func(opts *consulapi.QueryOptions) (*consulapi.QueryMeta, error) {
			var (
				meta *consulapi.QueryMeta
				err  error
			)
			entries, meta, err = w.client.Health().Service(ss.name, "", false, opts)
			return meta, err
		},
		func(suspect string) { st.applyHealth(ss, service(ss.name, w.cfg.Datacenter, entries), suspect) })
}
