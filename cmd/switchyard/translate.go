package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spf13/cobra"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator"
	"github.com/switchyard-io/switchyard/translator/ir"
)

func newTranslateCmd() *cobra.Command {
	var (
		group  string
		opts   policy.Options
		consul *liveConsul
	)
	cmd := &cobra.Command{
		Use:   "translate PATH...",
		Short: "Print the Envoy config a policy produces (listeners, routes, clusters, secrets; endpoints with --consul-address)",
		Long: `Translate reads policy files as validate does and prints, for each proxy
group, the xDS resources Switchyard would serve its Envoys: listeners, route
configurations, clusters and secrets (private keys redacted), and for a
group with global rate limits what its rate limit service is given
(rateLimits), as YAML with
stable key order, so the output of two policy versions can be diffed in
review. It does not contact Consul: clusters are shown without endpoints
(a running Switchyard shows its live config at /debug/config). With
--consul-address it reads the services the policy routes to from Consul
once, as serve does (the same consul flags and SWITCHYARD_CONSUL_*
variables), and prints their live endpoints too.

It exits 1, listing every error as file:line: message, when the policy is
invalid.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, _, err := loadPolicy(cmd, opts, args)
			if err != nil {
				return err
			}
			snap := registry.NewSnapshot()
			if consul.enabled(cmd) {
				if snap, err = consul.snapshot(cmd.Context(), set); err != nil {
					return err
				}
			}
			res := translator.Translate(snap, set)
			found := false
			for _, cfg := range res.Configs {
				if group != "" && cfg.Group != group {
					continue
				}
				found = true
				resources, err := envoy.Build(cfg)
				if err != nil {
					return fmt.Errorf("group %q: %w", cfg.Group, err)
				}
				out := cmd.OutOrStdout()
				type section struct{ key, typ string }
				sections := []section{
					{"listeners", resource.ListenerType}, {"routes", resource.RouteType},
					{"clusters", resource.ClusterType}, {"secrets", resource.SecretType},
				}
				if consul.enabled(cmd) {
					fmt.Fprintf(out, "---\n# proxy group %s: what its Envoys get, with the endpoints Consul has now\ngroup: %s\n", cfg.Group, cfg.Group)
					sections = append(sections, section{"endpoints", resource.EndpointType})
				} else {
					fmt.Fprintf(out, "---\n# proxy group %s: what its Envoys get (endpoints come from Consul)\ngroup: %s\n", cfg.Group, cfg.Group)
				}
				for _, section := range sections {
					y, err := envoy.RenderYAML(envoy.RedactAll(section.typ, resources[section.typ]))
					if err != nil {
						return err
					}
					fmt.Fprintf(out, "%s:\n%s", section.key, indent(string(y)))
				}
				if err := printRateLimits(out, cfg); err != nil {
					return err
				}
			}
			if group != "" && !found {
				return fmt.Errorf("no proxy group %q in the policy", group)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&group, "group", "", "print only this proxy group")
	consul = consulFlags(cmd)
	meshFlags(cmd, &opts)
	return cmd
}

// printRateLimits prints the rate limit service's configuration for a
// group's global limits, if it has any.
func printRateLimits(out io.Writer, cfg *ir.Config) error {
	rls := envoy.RateLimitConfigs(cfg)
	if len(rls) == 0 {
		return nil
	}
	list := make([]types.Resource, len(rls))
	for i, c := range rls {
		list[i] = c
	}
	y, err := envoy.RenderYAML(list)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "rateLimits:\n%s", indent(string(y)))
	return err
}

// indent nests a YAML list under a key.
func indent(y string) string {
	lines := strings.SplitAfter(y, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString("  " + l)
		}
	}
	return b.String()
}
