package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"github.com/zclconf/go-cty/cty"
)

// The deployment examples (examples/systemd, examples/nomad) run the CLI
// this package builds: every switchyard command in them must be one it
// accepts, and every bootstrap in them must produce a bootstrap.

// TestSystemdExamples parses each unit (sections, keys, continued lines)
// and runs its switchyard commands' flags through the real CLI; the
// settings file must hold only known settings.
func TestSystemdExamples(t *testing.T) {
	units, _ := filepath.Glob("../../examples/systemd/*.service")
	if len(units) < 2 {
		t.Fatalf("got units %v; want switchyard.service and envoy-edge.service", units)
	}
	commands := 0
	for _, path := range units {
		sections := parseUnit(t, path)
		for _, s := range []string{"Unit", "Service", "Install"} {
			if sections[s] == nil {
				t.Errorf("%s: no [%s] section", path, s)
			}
		}
		if len(sections["Service"]["ExecStart"]) != 1 {
			t.Errorf("%s: want one ExecStart, got %v", path, sections["Service"]["ExecStart"])
		}
		for _, key := range []string{"ExecStartPre", "ExecStart"} {
			for _, line := range sections["Service"][key] {
				if args := switchyardArgs(line); args != nil {
					checkCommand(t, path, args)
					commands++
				}
			}
		}
	}
	if commands < 2 {
		t.Errorf("found %d switchyard commands in the units; want serve and bootstrap", commands)
	}
	v := viper.New()
	bindSettings(v, pflag.NewFlagSet("serve", pflag.ContinueOnError))
	if err := loadSettings(v, "../../examples/systemd/switchyard.yaml"); err != nil {
		t.Errorf("examples/systemd/switchyard.yaml: %v", err)
	}
	if got := v.GetStringSlice("policy.paths"); len(got) != 1 || got[0] != "/etc/switchyard/policies" {
		t.Errorf("examples/systemd/switchyard.yaml policy.paths = %v", got)
	}
}

// TestNomadExample parses the job, finds its tasks, and checks each
// switchyard command in their args with the real CLI.
func TestNomadExample(t *testing.T) {
	const path = "../../examples/nomad/switchyard.nomad.hcl"
	file, diags := hclparse.NewParser().ParseHCLFile(path)
	if diags.HasErrors() {
		t.Fatalf("%s: %v", path, diags)
	}
	ctx := &hcl.EvalContext{Variables: map[string]cty.Value{
		"attr": cty.ObjectVal(map[string]cty.Value{"unique": cty.ObjectVal(map[string]cty.Value{
			"network": cty.ObjectVal(map[string]cty.Value{"ip-address": cty.StringVal("10.0.0.1")})})}),
		"node":              cty.ObjectVal(map[string]cty.Value{"unique": cty.ObjectVal(map[string]cty.Value{"id": cty.StringVal("n1")})}),
		"NOMAD_TASK_DIR":    cty.StringVal("/local"),
		"NOMAD_SECRETS_DIR": cty.StringVal("/secrets"),
		"NOMAD_ALLOC_ID":    cty.StringVal("alloc-1"),
	}}
	var tasks []string
	commands := 0
	body := file.Body.(*hclsyntax.Body)
	for _, job := range blocks(body, "job") {
		for _, group := range blocks(job.Body, "group") {
			for _, task := range blocks(group.Body, "task") {
				tasks = append(tasks, group.Labels[0]+"/"+task.Labels[0])
				for _, config := range blocks(task.Body, "config") {
					cmd := attrString(t, config.Body, "command", ctx)
					args := attrList(t, config.Body, "args", ctx)
					line := strings.Join(append([]string{cmd}, args...), " ")
					if a := switchyardArgs(line); a != nil {
						checkCommand(t, path+" "+task.Labels[0], a)
						commands++
					}
				}
			}
		}
	}
	if strings.Join(tasks, " ") != "control-plane/switchyard edge/envoy" || commands != 2 {
		t.Errorf("%s: tasks %v with %d switchyard commands; want control-plane/switchyard and edge/envoy, each running switchyard", path, tasks, commands)
	}
}

// checkCommand runs a switchyard command's flags through the CLI: a
// bootstrap must print one; serve's flags must parse.
func checkCommand(t *testing.T, where string, args []string) {
	t.Helper()
	switch args[0] {
	case "bootstrap":
		stdout, stderr, err := run(t, args...)
		if err != nil || !strings.Contains(stdout, "dynamicResources:") {
			t.Errorf("%s: switchyard %v: %v\n%s", where, args, err, stderr)
		}
		if strings.Contains(stderr, "warning") {
			t.Errorf("%s: switchyard %v warns: %s", where, args, stderr)
		}
	case "serve":
		cmd, rest, err := newRootCmd(os.Stdout, os.Stderr).Find(args)
		if err == nil {
			err = cmd.ParseFlags(rest)
		}
		if err != nil {
			t.Errorf("%s: switchyard %v: %v", where, args, err)
		}
	default:
		t.Errorf("%s: unexpected switchyard command %v", where, args)
	}
}

// switchyardArgs are the arguments of the switchyard command in a command
// line (a shell one too: up to a redirection or the end of the quoted
// string), or nil when it runs none.
func switchyardArgs(line string) []string {
	_, after, ok := strings.Cut(line, "/usr/local/bin/switchyard ")
	if !ok {
		return nil
	}
	if i := strings.IndexAny(after, ">'&;"); i >= 0 {
		after = after[:i]
	}
	return strings.Fields(after)
}

// parseUnit reads a systemd unit: section -> key -> values, with
// backslash-continued lines joined.
func parseUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section, pending := "", ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := pending + strings.TrimSpace(sc.Text())
		pending = ""
		switch {
		case strings.HasSuffix(line, "\\"):
			pending = strings.TrimSuffix(line, "\\") + " "
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	if pending != "" {
		t.Fatalf("%s: ends in a continued line", path)
	}
	return out
}

func blocks(body *hclsyntax.Body, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, b := range body.Blocks {
		if b.Type == typ {
			out = append(out, b)
		}
	}
	return out
}

func attrString(t *testing.T, body *hclsyntax.Body, name string, ctx *hcl.EvalContext) string {
	t.Helper()
	a, ok := body.Attributes[name]
	if !ok {
		t.Fatalf("no %s at %s", name, body.SrcRange)
	}
	v, diags := a.Expr.Value(ctx)
	if diags.HasErrors() || v.Type() != cty.String {
		t.Fatalf("%s at %s: %v", name, a.SrcRange, diags)
	}
	return v.AsString()
}

func attrList(t *testing.T, body *hclsyntax.Body, name string, ctx *hcl.EvalContext) []string {
	t.Helper()
	a, ok := body.Attributes[name]
	if !ok {
		t.Fatalf("no %s at %s", name, body.SrcRange)
	}
	v, diags := a.Expr.Value(ctx)
	if diags.HasErrors() || !v.CanIterateElements() {
		t.Fatalf("%s at %s: %v", name, a.SrcRange, diags)
	}
	var out []string
	for _, e := range v.AsValueSlice() {
		out = append(out, e.AsString())
	}
	return out
}
