package registry

import (
	"cmp"
	"maps"
	"slices"
	"strconv"
)

// Health is the state of one instance as the proxies should see it.
type Health int

const (
	// Healthy instances take traffic: every check passing or warning.
	Healthy Health = iota
	// Unhealthy instances take no traffic: a check is critical.
	Unhealthy
	// Draining instances are in maintenance mode: finish what they have,
	// take nothing new. Maintenance wins over every other check.
	Draining
)

// String returns "healthy", "unhealthy" or "draining".
func (h Health) String() string {
	switch h {
	case Healthy:
		return "healthy"
	case Unhealthy:
		return "unhealthy"
	case Draining:
		return "draining"
	}
	return "health(" + strconv.Itoa(int(h)) + ")"
}

// Instance is one registered instance of a service.
type Instance struct {
	ID         string // Consul service ID, unique on its node
	Node       string
	Address    string // the service address, else the node address
	Port       int
	Tags       []string // sorted
	Meta       map[string]string
	Datacenter string
	Health     Health
	// Weight is Consul's Service.Weights.Passing, or .Warning when the
	// aggregated status is warning; 1 if unset, clamped to 1..128 (the range
	// Consul's own xDS server uses). A warning weight of 0 means "no traffic
	// while warning", so such an instance is Unhealthy, as in Consul.
	Weight int
}

// Service is a service name and its instances, sorted by (Node, ID).
type Service struct {
	Name      string
	Instances []Instance
}

// Snapshot is every service the registry knows at one moment: every
// service in Consul's catalog or, once Watcher.Want was called, the wanted
// ones (see Covers).
//
// Snapshot is immutable once published: never modify it or anything it
// points to (the Instances slices, Tags, Meta), because the next snapshot
// shares every unchanged service with it.
type Snapshot struct {
	services map[string]*Service
	// covered is the set of names the snapshot reflects; nil means every
	// name (Want never called, or NewSnapshot).
	covered map[string]struct{}
}

// NewSnapshot builds a snapshot from services, for tests and fixtures. It
// deep-copies its arguments and sorts instances and tags as published
// snapshots are. A later service with the same name replaces an earlier one.
// It covers every name: a name not among services is known absent.
func NewSnapshot(services ...Service) *Snapshot {
	m := make(map[string]*Service, len(services))
	for _, svc := range services {
		c := cloneService(svc)
		m[c.Name] = &c
	}
	return &Snapshot{services: m}
}

// WithService returns a copy of s in which svc (deep-copied and sorted,
// as NewSnapshot does) replaces the service of its name, sharing every
// other service with s as the Watcher's next snapshot does: for tests and
// benchmarks of what reuses unchanged services (see SameService).
func (s *Snapshot) WithService(svc Service) *Snapshot {
	out := &Snapshot{services: make(map[string]*Service, s.Len()+1)}
	if s != nil {
		maps.Copy(out.services, s.services)
		out.covered = s.covered
	}
	c := cloneService(svc)
	out.services[c.Name] = &c
	return out
}

// SameService reports whether s and o hold the very same named service
// (one both share, unchanged since one was made from the other) or both
// lack it. False says nothing: equal services made separately differ here.
// It lets a consumer reuse what it derived from a service in o.
func (s *Snapshot) SameService(o *Snapshot, name string) bool {
	var a, b *Service
	if s != nil {
		a = s.services[name]
	}
	if o != nil {
		b = o.services[name]
	}
	return a == b
}

// ChangedSince lists, sorted, the services s holds in place of o's: those
// not shared with o (see SameService). ok is false when the two do not
// hold the same names or cover the same ones, or o is nil: then more
// changed than services. It lets a consumer of consecutive snapshots redo
// only what the changed services fed.
func (s *Snapshot) ChangedSince(o *Snapshot) (names []string, ok bool) {
	if s == nil || o == nil || len(s.services) != len(o.services) || !s.sameCoverage(o) {
		return nil, false
	}
	for name, svc := range s.services {
		prev, had := o.services[name]
		if !had {
			return nil, false
		}
		if prev != svc {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, true
}

// Service returns the named service. The returned value shares memory with
// the snapshot: read it, never modify it.
func (s *Snapshot) Service(name string) (Service, bool) {
	if s == nil {
		return Service{}, false
	}
	svc, ok := s.services[name]
	if !ok {
		return Service{}, false
	}
	return *svc, true
}

// Names returns the service names, sorted.
func (s *Snapshot) Names() []string {
	if s == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(s.services))
}

// Covers reports whether the snapshot reflects the named service's current
// Consul state: the service was watched (or known absent from the catalog)
// when the snapshot was published. With no Want call, every name is covered.
//
// A service that is not covered is also absent from the snapshot, but that
// says nothing about Consul: it was wanted only recently, and its first
// health answer had not arrived yet. A covered service that is absent is
// absent from Consul's catalog. A nil Snapshot, like NewSnapshot(), is
// empty and covers every name.
func (s *Snapshot) Covers(name string) bool {
	if s == nil || s.covered == nil {
		return true
	}
	_, ok := s.covered[name]
	return ok
}

// Len returns the number of services.
func (s *Snapshot) Len() int {
	if s == nil {
		return 0
	}
	return len(s.services)
}

// Equal reports whether two snapshots hold the same services and
// instances and cover the same names.
func (s *Snapshot) Equal(o *Snapshot) bool {
	if s.Len() != o.Len() || !s.sameCoverage(o) {
		return false
	}
	if s.Len() == 0 {
		return true
	}
	for name, a := range s.services {
		b, ok := o.services[name]
		if !ok || (a != b && !a.equal(b)) {
			return false
		}
	}
	return true
}

func (s *Snapshot) sameCoverage(o *Snapshot) bool {
	var a, b map[string]struct{}
	if s != nil {
		a = s.covered
	}
	if o != nil {
		b = o.covered
	}
	if (a == nil) != (b == nil) {
		return false
	}
	return maps.Equal(a, b)
}

func (s *Service) equal(o *Service) bool {
	return s.Name == o.Name && slices.EqualFunc(s.Instances, o.Instances, Instance.equal)
}

func (i Instance) equal(o Instance) bool {
	return i.ID == o.ID && i.Node == o.Node && i.Address == o.Address &&
		i.Port == o.Port && i.Datacenter == o.Datacenter && i.Health == o.Health &&
		i.Weight == o.Weight && slices.Equal(i.Tags, o.Tags) && maps.Equal(i.Meta, o.Meta)
}

// cloneService deep-copies svc and sorts it into canonical order.
func cloneService(svc Service) Service {
	out := Service{Name: svc.Name, Instances: make([]Instance, len(svc.Instances))}
	for i, in := range svc.Instances {
		in.Tags = slices.Sorted(slices.Values(in.Tags))
		in.Meta = maps.Clone(in.Meta)
		out.Instances[i] = in
	}
	sortInstances(out.Instances)
	return out
}

func sortInstances(ins []Instance) {
	slices.SortFunc(ins, func(a, b Instance) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.ID, b.ID))
	})
}
