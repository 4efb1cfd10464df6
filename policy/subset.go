package policy

import (
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Subset selects some instances of a Consul service by their tags and
// meta, so that a route or a split entry can send traffic to, say, the
// instances tagged v2 (a canary) rather than to a separate service. It is
// re-evaluated on every Consul change: an instance whose tags change moves
// between subsets.
//
// The zero Subset is the whole service.
type Subset struct {
	Pos Pos
	// Tags are the Consul tags an instance must all carry; sorted.
	Tags []string
	// Meta are the Consul service meta pairs an instance must all have.
	Meta map[string]string
	// Except, set only on the subset-less entry of a split that also names
	// subsets of the same service, makes it "the rest": the instances in
	// none of these subsets. So `web tags [v2] weight 5` and `web weight
	// 95` send 5% to the v2 instances and 95% to every other one.
	Except []Subset
}

// IsZero reports whether the subset is the whole service.
func (s *Subset) IsZero() bool {
	return len(s.Tags) == 0 && len(s.Meta) == 0 && len(s.Except) == 0
}

// Matches reports whether an instance with these tags and meta is in the
// subset.
func (s *Subset) Matches(tags []string, meta map[string]string) bool {
	for _, t := range s.Tags {
		if !slices.Contains(tags, t) {
			return false
		}
	}
	for k, v := range s.Meta {
		if got, ok := meta[k]; !ok || got != v {
			return false
		}
	}
	for _, e := range s.Except {
		if e.Matches(tags, meta) {
			return false
		}
	}
	return true
}

// String is the subset's canonical label, "" for the whole service:
// "tag=v2", "tag=eu,tag=v2,meta.version=2" (tags, then meta by key), and
// "not(tag=v2|meta.track=beta)" for the rest of a split. Two subsets with
// the same label select the same instances; Envoy cluster names carry it.
func (s *Subset) String() string {
	if len(s.Except) > 0 {
		parts := make([]string, len(s.Except))
		for i := range s.Except {
			parts[i] = s.Except[i].String()
		}
		return "not(" + strings.Join(parts, "|") + ")"
	}
	var parts []string
	for _, t := range s.Tags {
		parts = append(parts, "tag="+t)
	}
	for _, k := range slices.Sorted(maps.Keys(s.Meta)) {
		parts = append(parts, "meta."+k+"="+s.Meta[k])
	}
	return strings.Join(parts, ",")
}

// subset decodes the tags and meta fields of a route or split entry; the
// zero Subset when neither is given.
func (d *decoder) subset(m *fields) Subset {
	var s Subset
	if m.has("tags") || m.has("meta") {
		s.Pos = d.pos(m.line)
	}
	if m.has("tags") {
		if m.emptyList("tags") {
			d.errorf(m.lineOf("tags"), "tags must list at least one Consul tag, or be omitted")
		}
		for _, it := range d.strList(m, "tags") {
			switch {
			case it.value == "":
				d.errorf(it.line, "tags must not be empty strings")
			case slices.Contains(s.Tags, it.value):
				d.errorf(it.line, "tag %s is listed twice", quoteValue(it.value))
			default:
				s.Tags = append(s.Tags, it.value)
			}
		}
		slices.Sort(s.Tags)
	}
	if n := m.vals["meta"]; n != nil {
		s.Meta = d.metaMatch(n)
	}
	return s
}

// subsetNeedsService reports a route's tags or meta without a service to
// select instances of.
func (d *decoder) subsetNeedsService(m *fields, s *Subset) {
	if s.IsZero() || m.has("service") {
		return
	}
	key := "tags"
	if !m.has(key) {
		key = "meta"
	}
	if m.has("split") {
		d.errorf(m.lineOf(key), "tags and meta select instances of a route's service; in a split, give them on each entry")
		return
	}
	d.errorf(m.lineOf(key), "tags and meta select instances of a route's service, and this route has none")
}

// metaMatch decodes a mapping of Consul meta keys to the values an
// instance must have.
func (d *decoder) metaMatch(n *yaml.Node) map[string]string {
	if n.Kind != yaml.MappingNode {
		d.errorf(n.Line, "meta must be a mapping of Consul meta keys to values, got %s", describe(n))
		return nil
	}
	if len(n.Content) == 0 {
		d.errorf(n.Line, "meta must give at least one key and value, or be omitted")
		return nil
	}
	out := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if !isString(k) || k.Value == "" {
			d.errorf(k.Line, "meta keys must be non-empty strings, got %s", describe(k))
			continue
		}
		if msg := valueProblem("meta key", k.Value); msg != "" {
			d.errorf(k.Line, "%s", msg)
			continue
		}
		if _, dup := out[k.Value]; dup {
			d.errorf(k.Line, "meta key %s is given twice", quoteValue(k.Value))
			continue
		}
		if !isString(v) {
			d.errorf(v.Line, "meta %s must be a string, got %s", quoteValue(k.Value), describe(v))
			continue
		}
		if msg := valueProblem("meta "+k.Value, v.Value); msg != "" {
			d.errorf(v.Line, "%s", msg)
			continue
		}
		out[k.Value] = v.Value
	}
	return out
}

// splitRest makes the subset-less entry of a split "the rest" of each
// service that the split also names with subsets (see Subset.Except).
func splitRest(split []WeightedService) {
	subsets := map[string][]Subset{}
	for _, w := range split {
		if !w.Subset.IsZero() {
			subsets[w.Service] = append(subsets[w.Service], w.Subset)
		}
	}
	for i := range split {
		w := &split[i]
		if w.Subset.IsZero() && len(subsets[w.Service]) > 0 {
			w.Subset.Except = subsets[w.Service]
		}
	}
}
