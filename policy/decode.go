package policy

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// This file holds a small strict walker over yaml.Node. yaml.v3's KnownFields
// does not reach into custom unmarshalers and its errors carry no file name,
// so every kind is decoded by hand: each mapping is checked against the
// fields it allows and every value keeps the line it came from.

// decoder decodes the documents of one file, collecting diagnostics.
type decoder struct {
	file  string
	diags *Diagnostics
	// meshOff: Switchyard runs without the Connect mesh, so what needs it
	// is an error (Load's Options.Mesh false; Parse leaves it to Load).
	meshOff bool
}

func (d *decoder) pos(line int) Pos { return Pos{File: d.file, Line: line} }

func (d *decoder) errorf(line int, format string, args ...any) {
	*d.diags = append(*d.diags, Diagnostic{Pos: d.pos(line), Severity: SeverityError, Message: fmt.Sprintf(format, args...)})
}

func (d *decoder) warnf(line int, format string, args ...any) {
	*d.diags = append(*d.diags, Diagnostic{Pos: d.pos(line), Severity: SeverityWarning, Message: fmt.Sprintf(format, args...)})
}

// fields is a mapping node whose keys have been checked.
type fields struct {
	what string // "listener", "route match", ... for messages
	line int
	vals map[string]*yaml.Node
	keys map[string]int // the line of each key given
}

// keyLine returns the line of key itself (in block form its value starts
// on a later line), or of the mapping when key is absent.
func (m *fields) keyLine(key string) int {
	if l, ok := m.keys[key]; ok {
		return l
	}
	return m.line
}

// has reports whether key was given with a non-null value.
func (m *fields) has(key string) bool { return m.vals[key] != nil }

// emptyList reports whether key was given as an empty list.
func (m *fields) emptyList(key string) bool {
	n := m.vals[key]
	return n != nil && n.Kind == yaml.SequenceNode && len(n.Content) == 0
}

// lineOf returns the line of key's value, or of the mapping when key is absent.
func (m *fields) lineOf(key string) int {
	if n := m.vals[key]; n != nil {
		return n.Line
	}
	return m.line
}

// mapping checks that n is a mapping whose keys are all in allowed, each
// given once. Null values count as absent. ok is false when n is not a
// mapping at all.
func (d *decoder) mapping(n *yaml.Node, what string, allowed ...string) (m *fields, ok bool) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.errorf(n.Line, "%s must be a mapping, got %s", what, describe(n))
		return nil, false
	}
	m = &fields{what: what, line: n.Line, vals: make(map[string]*yaml.Node), keys: make(map[string]int)}
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errorf(k.Line, "%s keys must be field names, got %s", what, describe(k))
			continue
		}
		if !contains(allowed, k.Value) {
			d.errorf(k.Line, "unknown field %q in %s", k.Value, what)
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errorf(k.Line, "duplicate field %q in %s (first given at line %d)", k.Value, what, first)
			continue
		}
		seen[k.Value] = k.Line
		m.keys[k.Value] = k.Line
		if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
			continue
		}
		m.vals[k.Value] = v
	}
	return m, true
}

// require reports a missing required field.
func (d *decoder) require(m *fields, key string) bool {
	if m.has(key) {
		return true
	}
	d.errorf(m.line, "missing required field %q in %s", key, m.what)
	return false
}

// str returns key's value as a string; ok is false when it is absent or not
// a scalar. Numbers and booleans are taken as written, so `exact: 1` means
// the string "1".
func (d *decoder) str(m *fields, key string) (v string, ok bool) {
	n := m.vals[key]
	if n == nil {
		return "", false
	}
	if !isString(n) {
		d.errorf(n.Line, "%s must be a string, got %s", key, describe(n))
		return "", false
	}
	if msg := valueProblem(key, n.Value); msg != "" {
		d.errorf(n.Line, "%s", msg)
		return "", false
	}
	return n.Value, true
}

// valueProblem says what is wrong with any string value of field key, or
// "". Every string of a policy ends up in Envoy's config as a header name
// or value, domain, path, regex, name or service, and Envoy's schema
// refuses control characters in those (a domain with a newline would fail
// the whole build), so control characters are refused everywhere.
//
// A value that may be a secret is never shown: a key pasted into keyFile
// instead of its path would otherwise be echoed in every message and log.
func valueProblem(key, v string) string {
	const notShown = "the value is not shown, in case it is a key"
	file := isFileField(key)
	switch {
	case looksLikePEM(v) && file:
		return fmt.Sprintf("%s holds what looks like PEM content, not a file path; write it to a file and give that file's path (%s)", key, notShown)
	case looksLikePEM(v):
		return fmt.Sprintf("%s holds what looks like PEM content; keys and certificates belong in files named by certFile, keyFile and caFile (%s)", key, notShown)
	case looksLikeJSON(v) && file:
		return fmt.Sprintf("%s holds what looks like JSON content, not a file path; write it to a file and give that file's path (%s)", key, notShown)
	case file && len(v) > MaxFilePathLength:
		return fmt.Sprintf("%s is %d bytes long, too long for a file path (at most %d bytes; %s)", key, len(v), MaxFilePathLength, notShown)
	case !strings.ContainsFunc(v, unicode.IsControl):
		return ""
	case file:
		return fmt.Sprintf("%s must not contain control characters (such as newline, carriage return, tab or NUL); it is a file path (%s)", key, notShown)
	case isKeyField(key):
		return fmt.Sprintf("%s must not contain control characters (such as newline, carriage return, tab or NUL) (%s)", key, notShown)
	}
	return fmt.Sprintf("%s must not contain control characters (such as newline, carriage return, tab or NUL), got %s", key, quoteValue(v))
}

// isFileField reports whether key names a file of key material: a key
// pasted there instead of the file's path must not be echoed, neither as
// the value nor as the path it would make.
func isFileField(key string) bool {
	switch key {
	case "certFile", "keyFile", "caFile", "jwksFile":
		return true
	}
	return false
}

// isKeyField reports whether key's value is key material itself (an
// inline JSON Web Key Set), which no message shows either.
func isKeyField(key string) bool {
	return key == "jwks"
}

// looksLikeJSON reports whether v starts as a JSON object or array does,
// as a key set pasted for a path would.
func looksLikeJSON(v string) bool {
	v = strings.TrimSpace(v)
	return strings.HasPrefix(v, "{") || strings.HasPrefix(v, "[")
}

// looksLikePEM reports whether v holds a PEM boundary line.
func looksLikePEM(v string) bool {
	return strings.Contains(v, "-----BEGIN") || strings.Contains(v, "-----END")
}

func isString(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && contains([]string{"!!str", "!!int", "!!float", "!!bool"}, n.ShortTag())
}

// integer returns key's value, checked to lie in [lo, hi]; ok is false when
// the field is absent or invalid.
func (d *decoder) integer(m *fields, key string, lo, hi int64) (v int64, ok bool) {
	n := m.vals[key]
	if n == nil {
		return 0, false
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		d.errorf(n.Line, "%s must be an integer, got %s", key, describe(n))
		return 0, false
	}
	if err := n.Decode(&v); err != nil || v < lo || v > hi {
		d.errorf(n.Line, "%s must be between %d and %d, got %s", key, lo, hi, n.Value)
		return 0, false
	}
	return v, true
}

// uint32Field is integer for uint32 fields.
func (d *decoder) uint32Field(m *fields, key string, lo int64) (uint32, bool) {
	v, ok := d.integer(m, key, lo, math.MaxUint32)
	return uint32(v), ok
}

// duration returns key's value as a non-negative Go duration; nil when absent
// or invalid.
func (d *decoder) duration(m *fields, key string) *time.Duration {
	n := m.vals[key]
	if n == nil {
		return nil
	}
	if n.Kind != yaml.ScalarNode || !contains([]string{"!!str", "!!int"}, n.ShortTag()) {
		d.errorf(n.Line, "%s must be a duration such as \"2s\" or \"500ms\", got %s", key, describe(n))
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		d.errorf(n.Line, "invalid %s %q: want a duration such as \"2s\" or \"500ms\"", key, n.Value)
		return nil
	}
	if v < 0 {
		d.errorf(n.Line, "%s must not be negative, got %s", key, n.Value)
		return nil
	}
	return &v
}

// boolean returns key's value; ok is false when absent or invalid.
func (d *decoder) boolean(m *fields, key string) (v, ok bool) {
	n := m.vals[key]
	if n == nil {
		return false, false
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		d.errorf(n.Line, "%s must be true or false, got %s", key, describe(n))
		return false, false
	}
	if err := n.Decode(&v); err != nil {
		d.errorf(n.Line, "%s must be true or false, got %s", key, n.Value)
		return false, false
	}
	return v, true
}

// list returns the items of key's value, which must be a sequence.
func (d *decoder) list(m *fields, key string) []*yaml.Node {
	n := m.vals[key]
	if n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n.Line, "%s must be a list, got %s", key, describe(n))
		return nil
	}
	items := make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		items[i] = resolve(c)
	}
	return items
}

// item is a string from a list, with its line.
type item struct {
	value string
	line  int
}

// strList returns key's value as a list of strings.
func (d *decoder) strList(m *fields, key string) []item {
	var out []item
	for _, n := range d.list(m, key) {
		if !isString(n) {
			d.errorf(n.Line, "%s items must be strings, got %s", key, describe(n))
			continue
		}
		if msg := valueProblem(key, n.Value); msg != "" {
			d.errorf(n.Line, "%s", msg)
			continue
		}
		out = append(out, item{n.Value, n.Line})
	}
	return out
}

// oneOf reports an error unless exactly one (or, with optional, at most one)
// of keys is present, and returns the one present ("" if none or several).
func (d *decoder) oneOf(m *fields, optional bool, keys ...string) string {
	var present []string
	for _, k := range keys {
		if m.has(k) {
			present = append(present, k)
		}
	}
	switch {
	case len(present) == 1:
		return present[0]
	case len(present) == 0 && optional:
		return ""
	case len(present) == 0:
		d.errorf(m.line, "%s needs one of %s", m.what, orList(keys))
	default:
		d.errorf(m.lineOf(present[1]), "%s may have only one of %s, got %s", m.what, orList(keys), strings.Join(present, " and "))
	}
	return ""
}

// Anchors and aliases may reuse values, within bounds: a file may expand
// to maxAliasRatio times the values written in it, or to minAliasLimit,
// whichever is more.
const (
	maxAliasRatio = 10
	minAliasLimit = 100_000
)

// aliasExpansion counts the values of a file's documents as written and
// checks them as the walk sees them, each alias replaced by the value it
// names: over reports an expansion beyond limit. It takes time in
// proportion to the values written, whatever the expansion.
func aliasExpansion(docs ...*yaml.Node) (written, limit int, over bool) {
	var count func(n *yaml.Node)
	count = func(n *yaml.Node) {
		written++
		for _, c := range n.Content {
			count(c)
		}
	}
	for _, doc := range docs {
		count(doc)
	}
	limit = max(maxAliasRatio*written, minAliasLimit)

	sizes := map[*yaml.Node]int{} // expanded size, capped at limit+1
	var size func(n *yaml.Node, depth int) int
	size = func(n *yaml.Node, depth int) int {
		if s, ok := sizes[n]; ok {
			return s
		}
		if depth > 10_000 { // an alias cycle, which yaml.v3 refuses anyway
			return limit + 1
		}
		s := 1
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			s = size(n.Alias, depth+1)
		}
		for _, c := range n.Content {
			s = min(s+size(c, depth+1), limit+1)
		}
		sizes[n] = s
		return s
	}
	total := 0
	for _, doc := range docs {
		total = min(total+size(doc, 0), limit+1)
	}
	return written, limit, total > limit
}

// resolve follows aliases, so an anchored value can be reused.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// describe names a node's type for messages: `a list`, `the string "x"`.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			if looksLikePEM(n.Value) {
				return "a string that looks like PEM content (not shown, in case it is a key)"
			}
			return "the string " + quoteValue(n.Value)
		case "!!int", "!!float":
			if len(n.Value) > 40 || looksLikePEM(n.Value) {
				return "a number too long to show"
			}
			return "the number " + n.Value // Diagnostic.String escapes what an !!int tag may hide
		case "!!bool":
			return "the boolean " + n.Value
		case "!!null":
			return "null"
		default:
			return fmt.Sprintf("a value tagged %s", n.Tag)
		}
	}
	return "an unsupported value"
}

func orList(keys []string) string {
	if len(keys) == 2 {
		return keys[0] + " or " + keys[1]
	}
	return strings.Join(keys[:len(keys)-1], ", ") + " or " + keys[len(keys)-1]
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

var (
	// nameRE is a DNS label: group, listener, certificate and route names
	// end up in Envoy resource and stat names.
	nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// serviceRE is a Consul service name.
	serviceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	// headerNameRE is an HTTP header name (an RFC 9110 token), or an HTTP/2
	// pseudo-header such as ":authority".
	headerNameRE = regexp.MustCompile("^:?[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
)

// ValidName reports whether v can name a proxy group, listener,
// certificate or route: a DNS label.
func ValidName(v string) bool { return nameRE.MatchString(v) }

// name returns a DNS-label name field, reporting it missing when required.
func (d *decoder) name(m *fields, key string, required bool) string {
	if required && !d.require(m, key) {
		return ""
	}
	v, ok := d.str(m, key)
	if !ok || !d.checkName(m.lineOf(key), m.what+" "+key, v) {
		return ""
	}
	return v
}

// checkName validates a DNS-label name; what is e.g. "listener name".
func (d *decoder) checkName(line int, what, v string) bool {
	if nameRE.MatchString(v) {
		return true
	}
	d.errorf(line, "invalid %s %q: use lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters", what, v)
	return false
}

// service validates a service name.
func (d *decoder) service(line int, v string) bool {
	if serviceRE.MatchString(v) {
		return true
	}
	d.errorf(line, "invalid service name %q: use letters, digits, '_', '.' and '-', starting with a letter or digit", v)
	return false
}

// regex validates an RE2 regular expression. Go's regexp implements RE2
// syntax, as Envoy's matcher does; RE2's program size limit is checked as
// RE2 counts.
func (d *decoder) regex(line int, key, v string) bool {
	if v == "" {
		d.errorf(line, "%s must not be empty", key)
		return false
	}
	// Go's parser also applies RE2's limit on nested repetitions.
	if _, err := regexp.Compile(v); err != nil {
		d.errorf(line, "invalid %s %s: %v", key, quoteValue(v), err)
		return false
	}
	if n := re2ProgramSize(v); n > MaxRegexProgramSize {
		d.errorf(line, "%s %s is too complex for Envoy: its RE2 program may have up to %d instructions, more than %d; simplify it or split the route", key, quoteValue(v), n, MaxRegexProgramSize)
		return false
	}
	return true
}

// maxQuoted bounds how much of a value a message quotes.
const maxQuoted = 200

// quoteValue quotes a value from a policy file for a message, escaping
// control characters, so that a value cannot forge a line of output. A
// long value is cut short.
func quoteValue(v string) string {
	if len(v) <= maxQuoted {
		return strconv.Quote(v)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(v[:cut]), len(v))
}
