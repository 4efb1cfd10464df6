package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// stateVersion is the format of a saved snapshot; a file of another
// version is refused, not guessed at.
const stateVersion = 1

// savedSnapshot is a Snapshot as Save writes it: Consul's view of the
// services, with no secret in it (no token, no key: only names, addresses,
// ports, tags, meta and health).
type savedSnapshot struct {
	Version int            `json:"version"`
	SavedAt time.Time      `json:"savedAt"`
	Origin  string         `json:"origin,omitempty"` // which Consul it is a view of (Saved.Origin)
	Covers  []string       `json:"covers,omitempty"` // nil: every name
	All     bool           `json:"coversAll,omitempty"`
	Service []savedService `json:"services"`
}

type savedService struct {
	Name      string          `json:"name"`
	Instances []savedInstance `json:"instances"`
}

type savedInstance struct {
	ID         string            `json:"id"`
	Node       string            `json:"node"`
	Address    string            `json:"address"`
	Port       int               `json:"port"`
	Tags       []string          `json:"tags,omitempty"`
	Meta       map[string]string `json:"meta,omitempty"`
	Datacenter string            `json:"datacenter,omitempty"`
	Health     string            `json:"health"`
	Weight     int               `json:"weight"`
}

// Saved is what a saved snapshot says of itself: when it was saved, and of
// which Consul (the caller's description, such as its address and
// datacenter), so that a view of another Consul is never served.
type Saved struct {
	At     time.Time
	Origin string
}

// Save encodes the snapshot for LoadSnapshot, stamped with at and origin.
func (s *Snapshot) Save(at time.Time, origin string) ([]byte, error) {
	out := savedSnapshot{Version: stateVersion, SavedAt: at.UTC(), Origin: origin, All: s == nil || s.covered == nil}
	if !out.All {
		for name := range s.covered {
			out.Covers = append(out.Covers, name)
		}
	}
	for _, name := range s.Names() {
		svc, _ := s.Service(name)
		ss := savedService{Name: name, Instances: []savedInstance{}}
		for _, in := range svc.Instances {
			ss.Instances = append(ss.Instances, savedInstance{ID: in.ID, Node: in.Node, Address: in.Address, Port: in.Port,
				Tags: in.Tags, Meta: in.Meta, Datacenter: in.Datacenter, Health: in.Health.String(), Weight: in.Weight})
		}
		out.Service = append(out.Service, ss)
	}
	return json.Marshal(out)
}

// LoadSnapshot decodes what Save wrote, and when and of what it was saved. Anything
// odd (another format version, an unknown health, a port out of range, an
// empty name) is an error: a state file is trusted only when it is whole.
func LoadSnapshot(b []byte) (*Snapshot, Saved, error) {
	var in savedSnapshot
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, Saved{}, fmt.Errorf("saved snapshot: %w", err)
	}
	if in.Version != stateVersion {
		return nil, Saved{}, fmt.Errorf("saved snapshot: format version %d, want %d", in.Version, stateVersion)
	}
	health := map[string]Health{Healthy.String(): Healthy, Unhealthy.String(): Unhealthy, Draining.String(): Draining}
	var services []Service
	for _, ss := range in.Service {
		if ss.Name == "" {
			return nil, Saved{}, errors.New("saved snapshot: a service without a name")
		}
		svc := Service{Name: ss.Name}
		for _, i := range ss.Instances {
			h, ok := health[i.Health]
			if !ok {
				return nil, Saved{}, fmt.Errorf("saved snapshot: service %q instance %q: unknown health %q", ss.Name, i.ID, i.Health)
			}
			if i.Port < 1 || i.Port > 65535 || i.Address == "" {
				return nil, Saved{}, fmt.Errorf("saved snapshot: service %q instance %q: address %q port %d", ss.Name, i.ID, i.Address, i.Port)
			}
			svc.Instances = append(svc.Instances, Instance{ID: i.ID, Node: i.Node, Address: i.Address, Port: i.Port,
				Tags: i.Tags, Meta: i.Meta, Datacenter: i.Datacenter, Health: h, Weight: max(1, min(128, i.Weight))})
		}
		services = append(services, svc)
	}
	snap := NewSnapshot(services...)
	if !in.All {
		snap.covered = make(map[string]struct{}, len(in.Covers))
		for _, name := range in.Covers {
			snap.covered[name] = struct{}{}
		}
	}
	return snap, Saved{At: in.SavedAt, Origin: in.Origin}, nil
}
