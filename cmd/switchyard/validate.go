package main

import (
	"github.com/spf13/cobra"

	"github.com/switchyard-io/switchyard/internal/redact"
	"github.com/switchyard-io/switchyard/policy"
)

func newValidateCmd() *cobra.Command {
	var opts policy.Options
	cmd := &cobra.Command{
		Use:   "validate PATH...",
		Short: "Check policy files and print every problem as file:line: message",
		Long: `Validate reads policy files (each PATH is a file or a directory of *.yaml
files) exactly as serve does, and prints every error and warning as
file:line: message. It exits 0 when the policy is valid (warnings allowed)
and 1 when there is any error. With --mesh it checks as serve --mesh does:
routes through the mesh (mesh: true) and a proxy group's mesh block need
it, and a policy without proxy groups is then valid. Give
--mesh-edge-identities as serve has mesh.edge-identities.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, diags, err := loadPolicy(cmd, opts, args)
			if err != nil {
				return err
			}
			cmd.Printf("valid: %d proxy group(s), %d certificate(s), %d warning(s)\n",
				len(set.Groups), len(set.Certificates), len(diags.Warnings()))
			return nil
		},
	}
	meshFlags(cmd, &opts)
	return cmd
}

// meshFlags defines --mesh and --mesh-edge-identities, which read the
// policy as serve's mesh.enabled and mesh.edge-identities do.
func meshFlags(cmd *cobra.Command, opts *policy.Options) {
	cmd.Flags().BoolVar(&opts.Mesh, "mesh", false, "read the policy as serve --mesh does: routes through the mesh (mesh: true) and a proxy group's mesh block need it; proxy groups are then optional")
	cmd.Flags().StringSliceVar(&opts.EdgeIdentities, "mesh-edge-identities", nil, "with --mesh, the only mesh identities proxy groups may route through the mesh with, as serve's mesh.edge-identities")
}

// loadPolicy loads policy files as serve (with the same options) does,
// printing every finding as file:line: message on stderr; any error makes
// the command exit 1.
func loadPolicy(cmd *cobra.Command, opts policy.Options, paths []string) (*policy.Set, policy.Diagnostics, error) {
	set, diags := policy.LoadWith(opts, paths...)
	for _, d := range diags {
		cmd.PrintErrln(redact.PEMKeys(d.String())) // a safety net: diagnostics never quote PEM
	}
	if diags.HasErrors() {
		return nil, diags, exitError{msg: "invalid policy"}
	}
	return set, diags, nil
}
