package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard-io/switchyard/internal/safefile"
)

// Load reads policy files: each path is a file or a directory, of which the
// *.yaml and *.yml files are read in name order (subdirectories and hidden
// files are skipped). Relative certificate paths resolve against the
// directory of the policy file that names them.
//
// It returns the Set (nil when there is any error-severity diagnostic) and
// every diagnostic found. Certificate, key and CA files are read here, so the
// Set is self-contained.
//
// Load holds every rule a policy set must pass to be served, so that
// `switchyard validate` and `serve` (which both call it) always agree: on top
// of Parse's checks, a set that defines no proxy group is an error, since it
// would serve every Envoy an empty config.
func Load(paths ...string) (*Set, Diagnostics) {
	return LoadWith(Options{}, paths...)
}

// Options change what Load requires.
type Options struct {
	// Mesh: Switchyard also serves Connect sidecars, whose config comes
	// from Consul; a policy without proxy groups is then valid (sidecars
	// need no policy file). Without it, a proxy group's mesh block and a
	// route with mesh: true are errors: they need the mesh's certificates.
	Mesh bool
	// EdgeIdentities, when not empty, are the only mesh identities a proxy
	// group with routes through the mesh may have (serve's
	// mesh.edge-identities): the operator, not the policy's authors,
	// decides which names an internet-facing Envoy may present to the
	// sidecars. Any other identity is an error at its line.
	EdgeIdentities []string
}

// LoadWith is Load with options; serve and validate pass the same ones.
func LoadWith(opts Options, paths ...string) (*Set, Diagnostics) {
	var (
		diags    Diagnostics
		names    []string
		contents = make(map[string][]byte)
	)
	add := func(name string) {
		if _, seen := contents[name]; seen {
			return
		}
		b, err := safefile.Read(name, safefile.PolicyLimit)
		if err != nil {
			diags = append(diags, Diagnostic{Pos: Pos{File: name}, Severity: SeverityError, Message: "cannot read policy file: " + pathErr(err)})
			return
		}
		contents[name] = b
		names = append(names, name)
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			diags = append(diags, Diagnostic{Pos: Pos{File: p}, Severity: SeverityError, Message: "cannot read policy path: " + pathErr(err)})
			continue
		}
		if !fi.IsDir() {
			add(p)
			continue
		}
		entries, err := os.ReadDir(p) // sorted by name
		if err != nil {
			diags = append(diags, Diagnostic{Pos: Pos{File: p}, Severity: SeverityError, Message: "cannot read policy directory: " + pathErr(err)})
			continue
		}
		found := 0
		for _, e := range entries {
			full := filepath.Join(p, e.Name())
			if !isPolicyFile(e.Name()) || e.IsDir() || isDirLink(e, full) {
				continue
			}
			add(full)
			found++
		}
		if found == 0 {
			diags = append(diags, Diagnostic{Pos: Pos{File: p}, Severity: SeverityWarning, Message: "no policy files (*.yaml, *.yml) in " + p})
		}
	}
	set, diags := parse(names, contents, diags, !opts.Mesh)
	return checkSet(opts, strings.Join(paths, ", "), set, diags)
}

// ParseWith is LoadWith for in-memory policy files, keyed by file name (a
// copy of what LoadWith read, such as the control plane keeps in its state
// directory): the same bytes pass or fail the same rules. As with Parse,
// relative certificate paths resolve against filepath.Dir(name) and are
// read from disk.
func ParseWith(opts Options, files map[string][]byte) (*Set, Diagnostics) {
	names := slices.Sorted(maps.Keys(files))
	set, diags := parse(names, files, nil, !opts.Mesh)
	return checkSet(opts, strings.Join(names, ", "), set, diags)
}

// checkSet applies to a parsed set the rules that depend on opts, and the
// rule that a set defines a proxy group (where names the files read).
func checkSet(opts Options, where string, set *Set, diags Diagnostics) (*Set, Diagnostics) {
	if set != nil && opts.Mesh && len(opts.EdgeIdentities) > 0 {
		if bad := unallowedIdentities(set, opts.EdgeIdentities); len(bad) > 0 {
			diags = append(diags, bad...)
			diags.sort()
			return nil, diags
		}
	}
	if set != nil && len(set.Groups) == 0 && !opts.Mesh {
		diags = append(diags, Diagnostic{
			Pos:      Pos{File: where},
			Severity: SeverityError,
			Message:  noGroupMessage,
		})
		diags.sort()
		return nil, diags
	}
	return set, diags
}

// unallowedIdentities reports each proxy group with routes through the
// mesh whose identity is not in allowed, at its mesh block (else its
// name, which is then its identity).
func unallowedIdentities(set *Set, allowed []string) Diagnostics {
	var out Diagnostics
	for i := range set.Groups {
		g := &set.Groups[i]
		if !g.UsesMesh() || slices.Contains(allowed, g.MeshService()) {
			continue
		}
		pos := g.Pos
		if g.Mesh != nil {
			pos = g.Mesh.Pos
		}
		out = append(out, Diagnostic{Pos: pos, Severity: SeverityError, Message: fmt.Sprintf(
			"proxy group %q: mesh identity %q is not one the operator allows edge groups (mesh.edge-identities: %s); use one of them in its mesh block",
			g.Name, g.MeshService(), strings.Join(allowed, ", "))})
	}
	return out
}

// noGroupMessage is the error Load reports for a policy that defines no
// proxy group.
const noGroupMessage = "no proxy group is defined; Switchyard will not serve an empty config"

// FilesIn lists the policy files Load would read for paths, without reading
// them: each path that is not a directory, and the policy files of each
// directory. Paths that cannot be read are left out.
func FilesIn(paths ...string) []string {
	var out []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if !fi.IsDir() {
			out = append(out, p)
			continue
		}
		entries, _ := os.ReadDir(p)
		for _, e := range entries {
			full := filepath.Join(p, e.Name())
			if isPolicyFile(e.Name()) && !e.IsDir() && !isDirLink(e, full) {
				out = append(out, full)
			}
		}
	}
	return out
}

func isPolicyFile(name string) bool {
	ext := filepath.Ext(name)
	return !strings.HasPrefix(name, ".") && (ext == ".yaml" || ext == ".yml")
}

// isDirLink reports whether e is a symlink to a directory.
func isDirLink(e fs.DirEntry, path string) bool {
	if e.Type()&fs.ModeSymlink == 0 {
		return false
	}
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// pathErr returns err's message without the path, which the diagnostic
// already shows.
func pathErr(err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return "no such file or directory"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// Parse parses and validates in-memory policy files, keyed by file name, in
// name order. Relative certificate paths resolve against filepath.Dir(name)
// and are read from disk. The checks that depend on how Switchyard runs
// (Options) are Load's: Parse accepts what the mesh allows.
func Parse(files map[string][]byte) (*Set, Diagnostics) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	return parse(names, files, nil, false)
}

// parse decodes the files in the given order, which decides which of two
// duplicate definitions is reported. meshOff makes what needs the mesh an
// error.
func parse(names []string, files map[string][]byte, diags Diagnostics, meshOff bool) (*Set, Diagnostics) {
	var out parsed
	for _, name := range names {
		d := &decoder{file: name, diags: &diags, meshOff: meshOff}
		d.decodeFile(files[name], &out)
	}
	out.check(&diags)
	diags.sort()
	if diags.HasErrors() {
		return nil, diags
	}
	return out.set(names), diags
}

// decodeFile decodes every document of one file. A YAML syntax error ends
// the file, since the parser cannot resynchronise after it.
func (d *decoder) decodeFile(b []byte, out *parsed) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var (
		docs      []*yaml.Node
		syntaxErr error
	)
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			syntaxErr = err
			break
		}
		docs = append(docs, &doc)
	}
	// The alias budget is the file's, not each document's: a thousand
	// documents each just under the limit would multiply it a thousandfold.
	if written, limit, over := aliasExpansion(docs...); over {
		// A few KB of nested aliases ("billion laughs") would otherwise
		// make the walk, and the list of mistakes, grow exponentially.
		d.errorf(docs[0].Line, "YAML aliases expand this file beyond %d values (%d written; aliases may expand a file to %d times its values, or to %d); repeat fewer aliases",
			limit, written, maxAliasRatio, minAliasLimit)
		docs = nil
	}
	for _, doc := range docs {
		d.document(doc, out)
	}
	if syntaxErr != nil {
		line, msg := yamlError(syntaxErr)
		d.errorf(line, "invalid YAML: %s", msg)
	}
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlError splits a yaml.v3 syntax error into its line and message.
func yamlError(err error) (line int, msg string) {
	s := err.Error()
	if m := yamlLineRE.FindStringSubmatch(s); m != nil {
		line, _ = strconv.Atoi(m[1])
		return line, m[2]
	}
	return 0, strings.TrimPrefix(s, "yaml: ")
}
