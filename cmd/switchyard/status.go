package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard-io/switchyard/controlplane"
	"github.com/switchyard-io/switchyard/internal/safefile"
)

// proxyStatus is one Envoy in a running Switchyard's /debug/proxies.
type proxyStatus struct {
	Node         string    `json:"node"`
	Group        string    `json:"group"`
	Protocol     string    `json:"protocol"`
	EnvoyVersion string    `json:"envoyVersion"`
	Since        time.Time `json:"connectedSince"`
	Rejecting    bool      `json:"rejecting"`
	Behind       []string  `json:"behind"`
	NoConfig     bool      `json:"noConfig"`
	Rejected     []struct {
		Type   string `json:"type"`
		Error  string `json:"error"`
		Policy string `json:"policy"`
	} `json:"rejected"`
}

func newStatusCmd() *cobra.Command {
	var adminAddress, tokenFile, output string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the Envoys connected to a running Switchyard: per group, who is in sync, behind or rejecting",
		Long: `Status asks a running Switchyard's admin API (/debug/proxies) which Envoys
are connected and prints, per proxy group (or sidecar), each Envoy's node,
xDS protocol, Envoy release, how long it has been connected, and its state:
"in sync" (it accepted the config it is served, of every type), "behind:
TYPES" (a newer config is on its way or was not accepted yet), "rejecting
TYPE: Envoy's reason (policy lines)", or "no config" (its group is in no
policy, its sidecar is not built, or nothing was sent yet). A summary per
group follows. -o json prints the admin API's answer as is.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, "http://"+adminAddress+"/debug/proxies", nil)
			if err != nil {
				return err
			}
			if tokenFile != "" {
				token, err := safefile.Read(tokenFile, safefile.FileLimit)
				if err != nil {
					return fmt.Errorf("--admin-token-file: %w", err)
				}
				req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
			}
			resp, err := (&http.Client{Timeout: timeout}).Do(req)
			if err != nil {
				return fmt.Errorf("switchyard admin API at %s: %w", adminAddress, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
			if err != nil {
				return fmt.Errorf("switchyard admin API at %s: %w", adminAddress, err)
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("switchyard admin API at %s: %s (--admin-token-file when admin.token-file is set)", adminAddress, resp.Status)
			}
			switch output {
			case "json":
				_, err := cmd.OutOrStdout().Write(body)
				return err
			case "table":
			default:
				return fmt.Errorf("--output %q: want table or json", output)
			}
			var out struct {
				Proxies []proxyStatus `json:"proxies"`
			}
			if err := json.Unmarshal(body, &out); err != nil {
				return fmt.Errorf("switchyard admin API at %s: %w", adminAddress, err)
			}
			printStatus(cmd.OutOrStdout(), out.Proxies, time.Now())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&adminAddress, "admin-address", controlplane.DefaultAdminAddress, "the running Switchyard's admin address (its admin.address)")
	f.StringVar(&tokenFile, "admin-token-file", "", "file holding the admin bearer token, when the Switchyard sets admin.token-file")
	f.StringVarP(&output, "output", "o", "table", "table or json")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the answer")
	return cmd
}

// printStatus writes the table of Envoys and a summary line per group.
func printStatus(w io.Writer, proxies []proxyStatus, now time.Time) {
	if len(proxies) == 0 {
		fmt.Fprintln(w, "no Envoy is connected")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tNODE\tPROTOCOL\tENVOY\tCONNECTED\tSTATE")
	type counts struct{ total, behind, rejecting, none int }
	groups := map[string]*counts{}
	for _, p := range proxies {
		c := groups[p.Group]
		if c == nil {
			c = &counts{}
			groups[p.Group] = c
		}
		c.total++
		state := "in sync"
		switch {
		case p.Rejecting:
			c.rejecting++
			var parts []string
			for _, r := range p.Rejected {
				part := r.Type + ": " + oneLine(r.Error, 100)
				if r.Policy != "" {
					part += " (" + r.Policy + ")"
				}
				parts = append(parts, part)
			}
			state = "rejecting " + strings.Join(parts, "; ")
		case p.NoConfig:
			c.none++
			state = "no config (its group is in no policy, its sidecar is not built, or nothing was sent yet)"
		case len(p.Behind) > 0:
			c.behind++
			state = "behind: " + strings.Join(p.Behind, ", ")
		}
		version := p.EnvoyVersion
		if version == "" {
			version = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Group, p.Node, p.Protocol, version, now.Sub(p.Since).Round(time.Second), state)
	}
	tw.Flush()
	names := make([]string, 0, len(groups))
	for g := range groups {
		names = append(names, g)
	}
	sort.Strings(names)
	fmt.Fprintln(w)
	for _, g := range names {
		c := groups[g]
		fmt.Fprintf(w, "%s: %d connected, %d in sync, %d behind, %d rejecting, %d without config\n", g, c.total, c.total-c.behind-c.rejecting-c.none, c.behind, c.rejecting, c.none)
	}
}

// oneLine shortens s to n characters on one line.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}
