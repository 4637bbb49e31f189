package bench

import (
	"strconv"
	"strings"
	"time"
)

// Workload names, as --workloads takes them.
const (
	WorkloadGet        = "get"         // GET of the connection's node, kept alive
	WorkloadPatch      = "patch"       // the firmware's status heartbeat, kept alive
	WorkloadGetClose   = "get-close"   // GET with Connection: close, a new TCP connection each
	WorkloadPatchClose = "patch-close" // the heartbeat the way the firmware sends it
	WorkloadWatch      = "watch"       // fan-out: N watchers, one change, time until all have it
	WorkloadMix        = "fleet-mix"   // a mixed fleet from picosim (agents and firmware)
)

// AllWorkloads is the default --workloads, in report order.
var AllWorkloads = []string{WorkloadGet, WorkloadPatch, WorkloadGetClose, WorkloadPatchClose, WorkloadWatch, WorkloadMix}

// loadWorkloads are those driven by the closed-loop load generator.
var loadWorkloads = map[string]bool{WorkloadGet: true, WorkloadPatch: true, WorkloadGetClose: true, WorkloadPatchClose: true}

// closes reports whether w opens a new connection per request.
func closes(w string) bool { return strings.HasSuffix(w, "-close") }

// requests returns the request builder of a load workload against t. Connection i works on node
// bench-(i+1) as device bench-(i+1), whatever the target, so every target serves the same objects.
func (t *target) requests(w string) requestFunc {
	nodes := t.lab.nodes
	close := closes(w)
	if strings.HasPrefix(w, WorkloadGet) {
		reqs := make([][]byte, len(nodes))
		for i, n := range nodes {
			reqs[i] = []byte(t.requestHead(i, "GET", "/api/v1/nodes/"+n, close) + "\r\n")
		}
		return func(conn int, _ int64) []byte { return reqs[conn%len(reqs)] }
	}
	return func(conn int, sec int64) []byte {
		i := conn % len(nodes)
		body := heartbeat(time.Unix(sec, 0), "127.0.0.1")
		return []byte(t.requestHead(i, "PATCH", "/api/v1/nodes/"+nodes[i]+"/status", close) +
			"Content-Type: application/strategic-merge-patch+json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	}
}

// heartbeat is the reference firmware's status PATCH body: its five conditions stamped with the
// board's clock (whole seconds, so the node really changes once a second, as a fleet's heartbeats do)
// and its address.
func heartbeat(now time.Time, ip string) string {
	ts := now.UTC().Format(time.RFC3339)
	var b strings.Builder
	b.WriteString(`{"status":{"conditions":[`)
	for i, c := range [][3]string{
		{"Ready", "True", "KubeletReady"},
		{"MemoryPressure", "False", "KubeletHasSufficientMemory"},
		{"DiskPressure", "False", "KubeletHasNoDiskPressure"},
		{"PIDPressure", "False", "KubeletHasSufficientPID"},
		{"NetworkUnavailable", "False", "RouteCreated"},
	} {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"type":"` + c[0] + `","status":"` + c[1] + `","reason":"` + c[2] +
			`","lastHeartbeatTime":"` + ts + `","lastTransitionTime":"` + ts + `"}`)
	}
	b.WriteString(`],"addresses":[{"type":"InternalIP","address":"` + ip + `"}]}}`)
	return b.String()
}
