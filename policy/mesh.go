package policy

// KindMesh is the kind of the document that configures every sidecar of
// the Connect mesh.
const KindMesh = "Mesh"

// meshFields are the fields a Mesh document allows. It has no name: there
// is one mesh, so at most one Mesh document.
var meshFields = []string{"apiVersion", "kind", "accessLog", "tracing"}

// Mesh is what every sidecar of the Connect mesh does beside carrying
// traffic: its request log and its tracing. A sidecar's settings are the
// mesh's, not a proxy group's, because a sidecar belongs to no group; they
// have the very shape and rules of a group's, so an operator learns them
// once.
type Mesh struct {
	Pos Pos // the line of its kind
	// AccessLog is where and how sidecars log each request (HTTP) or
	// connection (tcp) on their public and upstream listeners; nil when
	// not set: JSON lines on Envoy's standard output, as for a group.
	AccessLog *AccessLog
	// Tracing sends spans of the sidecars' HTTP requests to an
	// OpenTelemetry collector; nil: no tracing. An empty ServiceName
	// means each sidecar's own service name.
	Tracing *Tracing
}

// EffectiveAccessLog is the sidecars' access log with the defaults filled
// in, or nil when it is off. A nil Mesh (no Mesh document) has the
// defaults.
func (m *Mesh) EffectiveAccessLog() *AccessLog {
	if m == nil {
		return effectiveAccessLog(nil)
	}
	return effectiveAccessLog(m.AccessLog)
}

// meshDoc decodes a Mesh document. It needs the mesh (serve --mesh): a
// Mesh document without it would configure nothing.
func (d *decoder) meshDoc(m *fields, out *parsed) {
	ms := Mesh{Pos: d.pos(m.lineOf("kind"))}
	if an := m.vals["accessLog"]; an != nil {
		ms.AccessLog = d.accessLog(an)
	}
	if tn := m.vals["tracing"]; tn != nil {
		ms.Tracing = d.tracing(tn, "")
	}
	d.needMesh(ms.Pos.Line, "a Mesh document")
	out.meshes = append(out.meshes, ms)
}

// checkMeshes refuses a second Mesh document: two would leave which one
// applies to the order files are read in.
func (p *parsed) checkMeshes(errorf func(Pos, string, ...any)) {
	for _, ms := range p.meshes[min(1, len(p.meshes)):] {
		errorf(ms.Pos, "a second Mesh document (the first is at %s); the mesh has one: merge them", p.meshes[0].Pos)
	}
}
