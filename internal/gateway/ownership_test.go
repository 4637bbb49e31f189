package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/picogate/picogate/internal/nodeowner"
	"github.com/picogate/picogate/internal/registry"
)

// fakeNodes is the cluster's Nodes as a map; a name not in it does not exist.
type fakeNodes struct {
	synced bool
	m      map[string]nodeowner.Ownership
	err    error // Lookup's, for a name not in m
}

func (f fakeNodes) HasSynced() bool                       { return f.synced }
func (f fakeNodes) Owner(name string) nodeowner.Ownership { return f.m[name] }
func (f fakeNodes) Lookup(_ context.Context, name string) (nodeowner.Ownership, error) {
	if o, ok := f.m[name]; ok {
		return o, nil
	}
	return nodeowner.Ownership{}, f.err
}

// recordingTransport answers 200 and keeps what was forwarded.
type recordingTransport struct {
	forwarded []*http.Request
	bodies    []string
}

func (rt *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	var b []byte
	if r.Body != nil {
		b, _ = io.ReadAll(r.Body)
	}
	rt.forwarded = append(rt.forwarded, r)
	rt.bodies = append(rt.bodies, string(b))
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader("{}")), Request: r}, nil
}

func TestOwnershipChecks(t *testing.T) {
	devices := registryOf(dev("pico-1", registry.AuthToken), dev("worker-1", registry.AuthToken), dev("pico-9", registry.AuthToken))
	marked, real := nodeowner.Ownership{Exists: true, Marked: true}, nodeowner.Ownership{Exists: true}
	nodes := fakeNodes{synced: true, m: map[string]nodeowner.Ownership{"pico-1": marked, "worker-1": real, "real-2": real, "anon-1": marked}}
	node := func(name string) string {
		return `{"kind":"Node","apiVersion":"v1","metadata":{"name":"` + name + `","labels":{"a":"b"}}}`
	}
	const smp = "application/strategic-merge-patch+json"
	tests := []struct {
		name       string
		token      string // "" for no credential
		method     string
		path       string
		ctype      string
		body       string
		nodes      *fakeNodes // default nodes
		want       int
		wantMarked bool // the forwarded body carries the marker
		message    string
	}{
		{name: "device reads its own node", token: "tok-pico-1", method: "GET", path: "/api/v1/nodes/pico-1", want: 200},
		{name: "device named like a real node", token: "tok-worker-1", method: "GET", path: "/version", want: 403, message: "node worker-1 is not a picogate device node"},
		{name: "device without a Node yet", token: "tok-pico-9", method: "GET", path: "/version", want: 200},
		{name: "nodes not loaded", token: "tok-pico-1", method: "GET", path: "/version", nodes: &fakeNodes{}, want: 503},
		{name: "device creates its Node", token: "tok-pico-9", method: "POST", path: "/api/v1/nodes", ctype: "application/json", body: node("pico-9"), want: 200, wantMarked: true},
		{name: "device creates another Node", token: "tok-pico-9", method: "POST", path: "/api/v1/nodes", ctype: "application/json", body: node("pico-1"), want: 403, message: "node pico-9 may create only its own Node, not pico-1"},
		{name: "device creates a Node twice named", token: "tok-pico-9", method: "POST", path: "/api/v1/nodes", ctype: "application/json", body: `{"metadata":{"name":"pico-9","name":"pico-1"}}`, want: 400},
		{name: "device creates a Node in YAML", token: "tok-pico-9", method: "POST", path: "/api/v1/nodes", ctype: "application/yaml", body: "metadata: {name: pico-1}", want: 415},
		{name: "device event about itself", token: "tok-pico-1", method: "POST", path: "/api/v1/namespaces/default/events", ctype: "application/json", body: `{"involvedObject":{"kind":"Node","name":"pico-1"}}`, want: 200},
		{name: "device event about another node", token: "tok-pico-1", method: "POST", path: "/apis/events.k8s.io/v1/namespaces/default/events", ctype: "application/json", body: `{"regarding":{"kind":"Node","name":"pico-9"}}`, want: 403},
		{name: "shared: create a new Node", method: "POST", path: "/api/v1/nodes", ctype: "application/json", body: node("anon-2"), want: 200, wantMarked: true},
		{name: "shared: create a Node again", method: "POST", path: "/api/v1/nodes", ctype: "application/json", body: node("anon-1"), want: 200, wantMarked: true},
		{name: "shared: create a real node", method: "POST", path: "/api/v1/nodes", ctype: "application/json", body: node("real-2"), want: 403, message: "node real-2 is not a picogate device node"},
		{name: "shared: create a registered device's Node", method: "POST", path: "/api/v1/nodes", ctype: "application/json", body: node("pico-9"), want: 403, message: "belongs to a registered device"},
		{name: "shared: heartbeat of its Node", method: "PATCH", path: "/api/v1/nodes/anon-1/status", ctype: smp, body: `{}`, want: 200},
		{name: "shared: heartbeat of a registered device's Node", method: "PATCH", path: "/api/v1/nodes/pico-1/status", ctype: smp, body: `{}`, want: 403},
		{name: "shared: heartbeat of a real node", method: "PATCH", path: "/api/v1/nodes/real-2/status", ctype: smp, body: `{}`, want: 403},
		{name: "shared: heartbeat of no Node", method: "PATCH", path: "/api/v1/nodes/anon-7/status", ctype: smp, body: `{}`, want: 403},
		{name: "shared: heartbeat when the API server does not answer", method: "PATCH", path: "/api/v1/nodes/anon-7/status", ctype: smp, body: `{}`,
			nodes: &fakeNodes{synced: true, err: errors.New("timeout")}, want: 503},
		{name: "shared: its ConfigMap", method: "GET", path: "/api/v1/namespaces/default/configmaps/pico-config", want: 200},
		{name: "shared: cordon", method: "PATCH", path: "/api/v1/nodes/anon-1", ctype: smp, body: `{"spec":{"unschedulable":true}}`, want: 403},
		{name: "shared: read a Secret", method: "GET", path: "/api/v1/namespaces/kube-system/secrets/x", want: 403},
		{name: "shared: list pods", method: "GET", path: "/api/v1/pods?fieldSelector=spec.nodeName%3Danon-1", want: 403},
		{name: "shared: read a Node", method: "GET", path: "/api/v1/nodes/anon-1", want: 403},
		{name: "shared: post an event", method: "POST", path: "/api/v1/namespaces/default/events", ctype: "application/json", body: `{}`, want: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := nodes
			if tt.nodes != nil {
				n = *tt.nodes
			}
			checks, err := OwnershipChecks(n, devices)
			if err != nil {
				t.Fatal(err)
			}
			rt := &recordingTransport{}
			g := newTestGateway(t, Config{Registry: devices, SharedIdentity: true, Checks: checks, Transport: rt})
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
			req.RemoteAddr = "192.168.1.50:4000"
			if tt.body == "" {
				req.Body = http.NoBody
			}
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			w := httptest.NewRecorder()
			g.Handler().ServeHTTP(w, req)
			if w.Code != tt.want {
				t.Fatalf("got %d %s, want %d", w.Code, w.Body, tt.want)
			}
			if tt.message != "" && !strings.Contains(readStatus(t, w.Body.Bytes()).Message, tt.message) {
				t.Errorf("got message %q, want it to contain %q", readStatus(t, w.Body.Bytes()).Message, tt.message)
			}
			if forwarded := len(rt.forwarded) > 0; forwarded != (tt.want == 200) {
				t.Fatalf("forwarded: got %v, want %v", forwarded, tt.want == 200)
			}
			if tt.wantMarked {
				fwd := rt.forwarded[0]
				if !strings.Contains(rt.bodies[0], `"`+registry.NodeMarkerLabel+`":"true"`) || !strings.Contains(rt.bodies[0], `"a":"b"`) || fwd.ContentLength != int64(len(rt.bodies[0])) {
					t.Errorf("forwarded body %q (Content-Length %d): want the sender's Node with the marker", rt.bodies[0], fwd.ContentLength)
				}
			} else if len(rt.bodies) > 0 && rt.bodies[0] != tt.body {
				t.Errorf("forwarded body %q, want the sender's %q", rt.bodies[0], tt.body)
			}
			if len(rt.forwarded) > 0 && tt.token == "" && rt.forwarded[0].Header.Get("Impersonate-User") != SharedUser {
				t.Errorf("forwarded as %q, want %s", rt.forwarded[0].Header.Get("Impersonate-User"), SharedUser)
			}
		})
	}
}

func TestOwnershipChecksNeedNodes(t *testing.T) {
	if _, err := OwnershipChecks(nil, nil); err == nil {
		t.Error("got no error for nil Nodes")
	}
}
