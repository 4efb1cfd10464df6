package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/switchyard-io/switchyard/controlplane"
	"github.com/switchyard-io/switchyard/envoy"
)

func newBootstrapCmd() *cobra.Command {
	var o envoy.BootstrapOptions
	var protocol, sidecarFor, envoyVersion string
	cmd := &cobra.Command{
		Use:   "bootstrap (--node-id ID --group NAME | --sidecar-for SERVICE_ID)",
		Short: "Print an Envoy bootstrap that fetches its config from Switchyard",
		Long: `Bootstrap prints an Envoy bootstrap (YAML) whose only static part is the
cluster that reaches Switchyard: listeners, routes, clusters, endpoints and
certificates all arrive over one ADS stream. Run Envoy with it:

  switchyard bootstrap --node-id edge-1 --group edge > envoy.yaml
  envoy -c envoy.yaml

For a Consul Connect sidecar, name the service instance it fronts, as
with consul connect envoy -sidecar-for:

  switchyard bootstrap --sidecar-for web-1 --admin-address 127.0.0.1:19000 > web-1-envoy.yaml

node.id is then the sidecar's proxy service ID, web-1-sidecar-proxy (Consul's
name for a SidecarService without an ID of its own; --node-id overrides it),
and node.cluster is "` + envoy.SidecarNodeCluster + `", which tells Switchyard this Envoy is a sidecar.

It also sets Envoy's overload protection: a cap on open downstream
connections and load shedding as the heap nears a limit (--max-connections,
--max-heap-bytes).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case sidecarFor != "" && o.Group != "":
				return fmt.Errorf("--sidecar-for and --group exclude each other: a sidecar's config comes from Consul, not a proxy group")
			case sidecarFor != "":
				o.Group = envoy.SidecarNodeCluster
				if o.NodeID == "" {
					o.NodeID = envoy.SidecarProxyID(sidecarFor)
				}
			case o.Group == "":
				return fmt.Errorf("give --group (an edge proxy) or --sidecar-for (a Connect sidecar)")
			case o.NodeID == "":
				return fmt.Errorf("--node-id is required with --group")
			}
			switch protocol {
			case "delta":
				o.Delta = true
			case "sotw":
				o.Delta = false
			default:
				return fmt.Errorf("--xds-protocol %q: want delta or sotw", protocol)
			}
			if envoyVersion != "" {
				var major, minor uint32
				if _, err := fmt.Sscanf(envoyVersion, "%d.%d", &major, &minor); err != nil {
					return fmt.Errorf("--envoy-version %q: want a release such as 1.40.0", envoyVersion)
				}
				if !envoy.EnvoySupported(major, minor) {
					fmt.Fprintf(cmd.ErrOrStderr(), "switchyard bootstrap: warning: Envoy %s is outside the supported range %s; its config may be refused or behave differently\n",
						envoyVersion, envoy.SupportedEnvoys)
				}
			}
			out, err := envoy.Bootstrap(o)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.NodeID, "node-id", "", "Envoy's node.id, unique per Envoy (required with --group; with --sidecar-for, default SERVICE_ID-sidecar-proxy)")
	f.StringVar(&o.Group, "group", "", "proxy group (Envoy's node.cluster) whose policy this Envoy gets")
	f.StringVar(&sidecarFor, "sidecar-for", "", "the Consul service instance ID this Envoy is the Connect sidecar of (instead of --group)")
	f.StringSliceVar(&o.XDSAddresses, "xds-address", []string{controlplane.DefaultXDSAddress},
		"Switchyard's xDS address, host:port; several (repeated or comma-separated) for replicas, Envoy fails over between them")
	f.StringVar(&o.AdminAddress, "admin-address", "127.0.0.1:9901", "Envoy's admin listener, host:port (keep it on loopback)")
	f.StringVar(&o.PrometheusAddress, "prometheus-address", "", "serve Envoy's stats in Prometheus format at GET /metrics on this host:port (and nothing else of the admin API); off by default")
	f.StringVar(&protocol, "xds-protocol", "delta", "xDS variant: delta (incremental) or sotw (state of the world)")
	f.StringVar(&envoyVersion, "envoy-version", "", "the Envoy release that will run this bootstrap (such as 1.40.0): warns when it is outside the supported range "+envoy.SupportedEnvoys)
	f.StringVar(&o.XDSCAFile, "xds-ca-file", "", "reach Switchyard over TLS, verifying its certificate with this PEM CA")
	f.StringVar(&o.XDSServerName, "xds-server-name", "", "name (DNS or IP) to verify in Switchyard's certificate (default: the host of --xds-address)")
	f.StringVar(&o.XDSCertFile, "xds-cert-file", "", "Envoy's PEM client certificate, for Switchyard's mutual TLS (with --xds-key-file)")
	f.StringVar(&o.XDSKeyFile, "xds-key-file", "", "the PEM private key of --xds-cert-file")
	f.Int64Var(&o.MaxConnections, "max-connections", envoy.DefaultMaxConnections,
		"most downstream connections Envoy keeps open at once, over all listeners; more are closed as they arrive (0: no limit)")
	f.Uint64Var(&o.MaxHeapBytes, "max-heap-bytes", envoy.DefaultMaxHeapBytes,
		"heap size at which Envoy sheds load: frees memory at 90%, drains connections at 92%, refuses new ones at 95%, answers 503 at 98% (0: off; else at least 64 MiB)")
	return cmd
}
