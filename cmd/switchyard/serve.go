package main

import (
	"bytes"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"google.golang.org/grpc/grpclog"

	"github.com/switchyard-io/switchyard/controlplane"
	"github.com/switchyard-io/switchyard/internal/redact"
	"github.com/switchyard-io/switchyard/internal/safefile"
	"github.com/switchyard-io/switchyard/registry"
)

// setting is one serve setting: a key in switchyard.yaml, a flag and a
// SWITCHYARD_* environment variable, all from this one table.
type setting struct {
	key   string // in the config file: consul.address
	flag  string // --consul-address
	def   any
	usage string
}

var settings = []setting{
	{"xds.address", "xds-address", controlplane.DefaultXDSAddress, "address Envoys connect to for xDS (gRPC), host:port"},
	{"xds.cert-file", "xds-cert-file", "", "PEM certificate to serve xDS over TLS (with xds.key-file; wanted off loopback: xDS carries private keys)"},
	{"xds.key-file", "xds-key-file", "", "PEM private key of xds.cert-file"},
	{"xds.client-ca-file", "xds-client-ca-file", "", "PEM CA that Envoys' client certificates must chain to (mutual TLS)"},
	{"xds.client-cert-groups", "xds-client-cert-groups", false, "with mutual TLS, give an Envoy only the proxy groups its certificate names (common name or DNS SAN)"},
	{"xds.max-connections", "xds-max-connections", controlplane.DefaultXDSMaxConnections, "most xDS connections open at once; more wait to be accepted"},
	{"xds.max-streams-per-connection", "xds-max-streams-per-connection", controlplane.DefaultXDSMaxStreams, "most concurrent xDS streams on one connection (an Envoy opens one)"},
	{"xds.max-connection-age", "xds-max-connection-age", controlplane.DefaultXDSMaxConnectionAge, "close xDS connections after this long (plus up to 10% jitter), so client certificates are checked again; Envoy reconnects at once; 0: never"},
	{"xds.max-connection-age-grace", "xds-max-connection-age-grace", controlplane.DefaultXDSMaxConnectionAgeGrace, "how long an aged xDS connection's streams get to move before it is closed"},
	{"xds.linger", "xds-linger", controlplane.DefaultLinger, "how long a proxy group removed from the policy (or a sidecar gone from Consul) stays served after its last Envoy disconnected, for one that reconnects; after a start, how long groups restored from state.dir wait for their Envoys"},
	{"admin.address", "admin-address", controlplane.DefaultAdminAddress, "address of /healthz, /readyz, /metrics and /debug/ (config, proxies, pprof); keep it on loopback"},
	{"admin.token-file", "admin-token-file", "", "file holding a bearer token every admin request but /healthz and /readyz must present (Authorization: Bearer ...)"},
	{"admin.max-connections", "admin-max-connections", controlplane.DefaultAdminMaxConnections, "most admin HTTP connections open at once"},
	{"policy.paths", "policy", []string{"policies"}, "policy file or directory; repeat or comma-separate for several"},
	{"mesh.enabled", "mesh", false, "serve Consul Connect sidecars (Envoys from 'switchyard bootstrap --sidecar-for') and proxy groups' routes through the mesh (mesh: true); needs Consul with connect { enabled = true }"},
	{"mesh.edge-identities", "mesh-edge-identities", []string{}, "the only mesh identities proxy groups may route through the mesh with (default: any name no Consul service uses); repeat or comma-separate"},
	{"consul.address", "consul-address", "127.0.0.1:8500", "Consul HTTP API address, host:port"},
	{"consul.scheme", "consul-scheme", "http", "Consul HTTP API scheme: http or https (https also lets all watches share a few HTTP/2 connections)"},
	{"consul.ca-file", "consul-ca-file", "", "PEM CA bundle that verifies Consul's HTTPS certificate (default: the system's roots)"},
	{"consul.cert-file", "consul-cert-file", "", "PEM client certificate for Consul's HTTPS API (with consul.key-file; for verify_incoming)"},
	{"consul.key-file", "consul-key-file", "", "PEM private key of consul.cert-file"},
	{"consul.tls-server-name", "consul-tls-server-name", "", "name to verify in Consul's certificate (default: the host of consul.address)"},
	{"consul.token", "consul-token", "", "Consul ACL token (prefer consul.token-file, SWITCHYARD_CONSUL_TOKEN or the config file: flags show in ps)"},
	{"consul.token-file", "consul-token-file", "", "file holding the Consul ACL token, read at start (instead of consul.token)"},
	{"consul.datacenter", "consul-datacenter", "", "Consul datacenter to watch (default: the agent's)"},
	{"consul.stale", "consul-stale", false, "allow stale reads: any Consul server answers, spreading the load off the leader"},
	{"consul.wait", "consul-wait", 5 * time.Minute, "blocking query wait time (Consul caps it at 10m)"},
	{"consul.stale-hold", "consul-stale-hold", 5 * time.Minute, "how long to keep last known instances when Consul answers a suspect empty list (fail static)"},
	{"consul.max-service-watches", "consul-max-service-watches", 0, "most services watched with a blocking query of their own; the rest share one health query and re-reads (0: 100 over http, no limit over https)"},
	{"consul.max-mesh-watches", "consul-max-mesh-watches", 0, "with mesh.enabled, most sidecar watches (proxy services, destinations, leaf certificates) with a blocking query of their own; the rest share the health and service list queries and re-reads (0: 40 over http, no limit over https)"},
	{"state.dir", "state-dir", "", "directory where Switchyard keeps Consul's last view, served when a start finds Consul unreachable, and a copy of the served policy files, so a start serves again groups removed from the policy while Envoys used them (no token or key in it); empty: off"},
	{"state.restore-after", "state-restore-after", controlplane.DefaultStateRestoreAfter, "how long a start waits for Consul before it serves the view saved in state.dir"},
	{"state.max-age", "state-max-age", controlplane.DefaultStateMaxAge, "the oldest saved view of Consul a start serves (an older one is likely long gone)"},
	{"debounce.holdoff", "debounce-holdoff", controlplane.DefaultHoldoff, "quiet time after a change before rebuilding, batching bursts"},
	{"debounce.max-delay", "debounce-max-delay", controlplane.DefaultMaxDelay, "longest a change waits for a rebuild during a steady stream of changes"},
	{"memory.limit", "memory-limit", "", "soft memory limit of the Go runtime, such as 2GiB or 1500MB: past it garbage is collected harder and freed memory returned to the system (default: GOMEMLIMIT when set, else 90% of the cgroup's memory limit when there is one, else none)"},
	{"log.level", "log-level", "info", "log level: debug, info, warn or error"},
	{"log.format", "log-format", "text", "log format: text or json"},
}

// zeroMeansDefault are the whole-number settings whose default depends on
// other settings: 0 asks for it.
var zeroMeansDefault = map[string]bool{"consul.max-service-watches": true, "consul.max-mesh-watches": true}

// toolingEnv are SWITCHYARD_* variables read by the project's scripts, not
// by serve; they are not settings and not errors.
var toolingEnv = map[string]bool{"SWITCHYARD_CACHE": true, "SWITCHYARD_TEST_LOGS": true, "SWITCHYARD_TEST_ENVOY": true}

const envPrefix = "SWITCHYARD"

func envName(key string) string {
	r := strings.NewReplacer(".", "_", "-", "_")
	return envPrefix + "_" + strings.ToUpper(r.Replace(key))
}

func newServeCmd() *cobra.Command {
	v := viper.New()
	var configFile string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the control plane",
		Long:  serveLong(),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadSettings(v, configFile); err != nil {
				return err
			}
			// A reader of stderr that goes away must not kill Switchyard
			// (writes then fail with EPIPE and are dropped), and one that
			// stops reading must not stall it (see LogWriter).
			signal.Ignore(syscall.SIGPIPE)
			logOut := controlplane.NewLogWriter(os.Stderr, 0)
			defer logOut.Close(2 * time.Second)
			log, err := newLogger(v.GetString("log.level"), v.GetString("log.format"), logOut)
			if err != nil {
				return err
			}
			// Libraries that log on their own (gRPC, the standard log
			// package) go through the same logger: redacted, and never
			// blocking on stderr.
			stdlog.SetFlags(0)
			stdlog.SetOutput(slog.NewLogLogger(log.Handler(), slog.LevelWarn).Writer())
			grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, slog.NewLogLogger(log.Handler(), slog.LevelError).Writer()))
			memory, err := applyMemoryLimit(v.GetString("memory.limit"))
			if err != nil {
				return err
			}
			log.Info("memory limit", "limit", memory)
			cfg := controlplane.Config{
				XDSAddress: v.GetString("xds.address"),
				XDSTLS: controlplane.TLSFiles{
					CertFile:     v.GetString("xds.cert-file"),
					KeyFile:      v.GetString("xds.key-file"),
					ClientCAFile: v.GetString("xds.client-ca-file"),
					BindGroups:   v.GetBool("xds.client-cert-groups"),
				},
				AdminAddress:   v.GetString("admin.address"),
				PolicyPaths:    v.GetStringSlice("policy.paths"),
				Mesh:           v.GetBool("mesh.enabled"),
				EdgeIdentities: v.GetStringSlice("mesh.edge-identities"),
				Consul:         consulConfig(v),
				Holdoff:        v.GetDuration("debounce.holdoff"),
				MaxDelay:       v.GetDuration("debounce.max-delay"),
				Limits: controlplane.Limits{
					XDSMaxConnections:        v.GetInt("xds.max-connections"),
					XDSMaxStreams:            uint32(v.GetInt("xds.max-streams-per-connection")),
					XDSMaxConnectionAge:      v.GetDuration("xds.max-connection-age"),
					XDSMaxConnectionAgeGrace: v.GetDuration("xds.max-connection-age-grace"),
					AdminMaxConnections:      v.GetInt("admin.max-connections"),
				},
				AdminTokenFile:    v.GetString("admin.token-file"),
				StateDir:          v.GetString("state.dir"),
				StateRestoreAfter: v.GetDuration("state.restore-after"),
				StateMaxAge:       v.GetDuration("state.max-age"),
				Linger:            v.GetDuration("xds.linger"),
				LogDropped:        logOut.Dropped,
			}
			if cfg.Limits.XDSMaxConnectionAge == 0 {
				cfg.Limits.XDSMaxConnectionAge = -1 // never: Config's zero is the default
			}
			srv, err := controlplane.New(cfg, log)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// SIGHUP reloads the policy and its certificates, as a config
			// reload does in other daemons, instead of killing the process.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						log.Info("SIGHUP: reloading the policy and its certificates")
						srv.Reload()
					}
				}
			}()
			return srv.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&configFile, "config", "c", "", "settings file (YAML); default ./switchyard.yaml when it exists")
	bindSettings(v, f)
	return cmd
}

// consulConfig is how Switchyard reaches Consul, from the consul.*
// settings (serve, and translate with --consul-address).
func consulConfig(v *viper.Viper) registry.Config {
	return registry.Config{
		Address:    v.GetString("consul.address"),
		Scheme:     v.GetString("consul.scheme"),
		Token:      v.GetString("consul.token"),
		TokenFile:  v.GetString("consul.token-file"),
		Datacenter: v.GetString("consul.datacenter"),
		AllowStale: v.GetBool("consul.stale"),
		WaitTime:   v.GetDuration("consul.wait"),
		StaleHold:  v.GetDuration("consul.stale-hold"),

		MaxServiceWatches: v.GetInt("consul.max-service-watches"),
		MaxMeshWatches:    v.GetInt("consul.max-mesh-watches"),

		CAFile:        v.GetString("consul.ca-file"),
		CertFile:      v.GetString("consul.cert-file"),
		KeyFile:       v.GetString("consul.key-file"),
		TLSServerName: v.GetString("consul.tls-server-name"),
	}
}

// bindSettings defines a flag for every setting and binds it, its
// environment variable and its default into v.
func bindSettings(v *viper.Viper, f *pflag.FlagSet) {
	bindSettingsWhere(v, f, func(string) bool { return true })
}

// bindSettingsWhere is bindSettings for the settings whose key keep
// accepts.
func bindSettingsWhere(v *viper.Viper, f *pflag.FlagSet, keep func(key string) bool) {
	for _, s := range settings {
		if !keep(s.key) {
			continue
		}
		usage := fmt.Sprintf("%s (%s, %s)", s.usage, s.key, envName(s.key))
		switch d := s.def.(type) {
		case string:
			f.String(s.flag, d, usage)
		case bool:
			f.Bool(s.flag, d, usage)
		case int:
			f.Int(s.flag, d, usage)
		case time.Duration:
			f.Duration(s.flag, d, usage)
		case []string:
			f.StringSlice(s.flag, d, usage)
		}
		_ = v.BindPFlag(s.key, f.Lookup(s.flag))
		_ = v.BindEnv(s.key, envName(s.key))
		v.SetDefault(s.key, s.def)
	}
}

func serveLong() string {
	var b strings.Builder
	b.WriteString(`Serve watches Consul and the policy files and serves Envoy over xDS until
SIGINT or SIGTERM, then stops gracefully (Envoys keep their last config).

Each setting comes, in order of precedence, from its flag, its environment
variable, the settings file, or its default. An unknown key in the settings
file or an unknown SWITCHYARD_* variable is an error.

Settings file keys (switchyard.yaml):
`)
	width := 0
	for _, s := range settings {
		width = max(width, len(s.key))
	}
	for _, s := range settings {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, s.key, s.usage)
	}
	return b.String()
}

// loadSettings reads the settings file and checks the file and the
// environment for keys Switchyard does not know: a typo must not silently
// fall back to a default.
func loadSettings(v *viper.Viper, file string) error {
	known := map[string]bool{}
	knownEnv := map[string]bool{}
	for _, s := range settings {
		known[s.key] = true
		knownEnv[envName(s.key)] = true
	}
	var unknown []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix+"_") && !knownEnv[name] && !toolingEnv[name] {
			unknown = append(unknown, "environment variable "+name)
		}
	}
	if file == "" {
		if _, err := os.Stat("switchyard.yaml"); err == nil {
			file = "switchyard.yaml"
		}
	}
	if file != "" {
		// Read once, through safefile: a named pipe or a device given as
		// the settings file must fail the start, not hang it.
		body, err := safefile.Read(file, safefile.FileLimit)
		if err != nil {
			return fmt.Errorf("settings file: %w", err)
		}
		fv := viper.New()
		fv.SetConfigType("yaml")
		if err := fv.ReadConfig(bytes.NewReader(body)); err != nil {
			return fmt.Errorf("settings file %s: %w", file, err)
		}
		for _, k := range fv.AllKeys() {
			if !known[k] {
				unknown = append(unknown, fmt.Sprintf("%s: key %q", file, k))
			}
		}
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(body)); err != nil {
			return fmt.Errorf("settings file %s: %w", file, err)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("unknown settings (see switchyard serve --help):\n  %s", strings.Join(unknown, "\n  "))
	}
	var bad []string
	for _, st := range settings {
		if err := checkType(st, v.Get(st.key)); err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", st.key, err))
		}
	}
	if _, err := parseSize(v.GetString("memory.limit")); err != nil {
		bad = append(bad, fmt.Sprintf("memory.limit: %v", err))
	}
	if len(bad) > 0 {
		return fmt.Errorf("invalid settings:\n  %s", strings.Join(bad, "\n  "))
	}
	return nil
}

// checkType checks a setting's value, from whichever source won, against
// its default's type. viper would otherwise turn "yes please" into false,
// a unit-less 300 into 300ns and a list into "".
func checkType(st setting, raw any) error {
	switch st.def.(type) {
	case time.Duration:
		switch r := raw.(type) {
		case time.Duration:
			return nil
		case int:
			if r == 0 { // 0 means "the default" and needs no unit
				return nil
			}
		case string:
			if _, err := time.ParseDuration(r); err != nil {
				return fmt.Errorf("%q is not a duration (like 10ms, 5s, 5m)", r)
			}
			return nil
		}
		return fmt.Errorf("%v needs a unit (like 10ms, 5s, 5m)", raw)
	case int:
		var n int64
		switch r := raw.(type) {
		case int:
			n = int64(r)
		case int64:
			n = r
		case string:
			var err error
			if n, err = strconv.ParseInt(r, 10, 32); err != nil {
				return fmt.Errorf("%q is not a whole number", r)
			}
		default:
			return fmt.Errorf("%v is not a whole number", raw)
		}
		lo := int64(1)
		if zeroMeansDefault[st.key] {
			lo = 0
		}
		if n < lo || n > math.MaxInt32 {
			return fmt.Errorf("%d is out of range: want %d to %d", n, lo, math.MaxInt32)
		}
		return nil
	case bool:
		switch r := raw.(type) {
		case bool:
			return nil
		case string:
			if _, err := strconv.ParseBool(r); err != nil {
				return fmt.Errorf("%q is not true or false", r)
			}
			return nil
		}
		return fmt.Errorf("%v is not true or false", raw)
	case string:
		switch raw.(type) {
		case string:
			return nil
		case int, int64, float64, bool:
			// YAML reads 0123 as 83 and 1e10 as a float. The value is not
			// repeated: this may be the Consul token.
			return fmt.Errorf("YAML read the value as %T, not text; quote it", raw)
		}
		return fmt.Errorf("want a single value, not %T", raw)
	case []string:
		switch r := raw.(type) {
		case string, []string:
			return nil
		case []any:
			for _, e := range r {
				if _, ok := e.(string); !ok {
					return fmt.Errorf("want a list of paths, got %v", raw)
				}
			}
			return nil
		}
		return fmt.Errorf("want a list of paths, got %v", raw)
	}
	return nil
}

// newLogger logs to out, with private keys redacted whatever a line holds.
func newLogger(level, format string, out io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("setting log.level: %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(redact.Handler(slog.NewTextHandler(out, opts))), nil
	case "json":
		return slog.New(redact.Handler(slog.NewJSONHandler(out, opts))), nil
	}
	return nil, fmt.Errorf("setting log.format: %q: want text or json", format)
}
