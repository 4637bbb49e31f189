package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustDefault(t testing.TB) *Policy {
	t.Helper()
	p, err := New(Default())
	if err != nil {
		t.Fatalf("default policy: %v", err)
	}
	return p
}

func TestAllow(t *testing.T) {
	p := mustDefault(t)
	tests := []struct {
		name, method, path, query, self string
		wantRule                        string
		wantAllowed                     bool
	}{
		{"create node", "POST", "/api/v1/nodes", "", "pico-1", "node-create", true},
		{"get own node", "GET", "/api/v1/nodes/pico-1", "", "pico-1", "node", true},
		{"patch own status", "PATCH", "/api/v1/nodes/pico-1/status", "", "pico-1", "node-status", true},
		{"other node", "GET", "/api/v1/nodes/pico-2", "", "pico-1", "none", false},
		{"delete own node", "DELETE", "/api/v1/nodes/pico-1", "", "pico-1", "node", false},
		{"list nodes", "GET", "/api/v1/nodes", "", "pico-1", "node-create", false},
		{"own lease", "PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/pico-1", "", "pico-1", "lease", true},
		{"other lease", "PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/pico-2", "", "pico-1", "none", false},
		{"pods of self", "GET", "/api/v1/pods", "fieldSelector=spec.nodeName%3Dpico-1", "pico-1", "pods-list", true},
		{"watch pods of self", "GET", "/api/v1/pods", "fieldSelector=spec.nodeName=pico-1&watch=1", "pico-1", "pods-list", true},
		{"pods of other", "GET", "/api/v1/pods", "fieldSelector=spec.nodeName%3Dpico-2", "pico-1", "pods-list", false},
		{"all pods", "GET", "/api/v1/pods", "", "pico-1", "pods-list", false},
		{"selector with extra term", "GET", "/api/v1/pods", "fieldSelector=spec.nodeName%3Dpico-1,metadata.name%3Dx", "pico-1", "pods-list", false},
		{"get a pod", "GET", "/api/v1/namespaces/default/pods/web-1", "", "pico-1", "pod", true},
		{"watch a pod", "GET", "/api/v1/namespaces/default/pods/web-1", "watch=true", "pico-1", "pod", false},
		{"pod status", "PATCH", "/api/v1/namespaces/default/pods/web-1/status", "", "pico-1", "pod-status", true},
		{"create pod", "POST", "/api/v1/namespaces/default/pods", "", "pico-1", "none", false},
		{"event", "POST", "/api/v1/namespaces/default/events", "", "pico-1", "events", true},
		{"configmap", "GET", "/api/v1/namespaces/default/configmaps/pico-config", "", "pico-1", "configmap", true},
		{"list secrets", "GET", "/api/v1/namespaces/kube-system/secrets", "", "pico-1", "none", false},
		{"clusterrolebinding", "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", "", "pico-1", "none", false},
		{"version", "GET", "/version", "", "pico-1", "version", true},
		{"shared: any node", "GET", "/api/v1/nodes/pico-9", "", "", "node", true},
		{"shared: bad name", "GET", "/api/v1/nodes/Pico_9", "", "", "none", false},
		{"shared: pods of a node", "GET", "/api/v1/pods", "fieldSelector=spec.nodeName%3Dpico-9", "", "pods-list", true},
		{"shared: all pods", "GET", "/api/v1/pods", "fieldSelector=spec.nodeName%3D", "", "pods-list", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := ParseQuery(tt.query)
			if err != nil {
				t.Fatalf("query: %v", err)
			}
			d := p.Allow(Request{Method: tt.method, Path: tt.path, Query: q, Watch: q.Watch(), Self: tt.self})
			if d.Allowed() != tt.wantAllowed || d.Rule != tt.wantRule {
				t.Errorf("got allowed=%v rule=%q (%s), want allowed=%v rule=%q", d.Allowed(), d.Rule, d.Reason, tt.wantAllowed, tt.wantRule)
			}
			if !d.Allowed() && !strings.Contains(d.Reason, tt.method) && !strings.Contains(d.Reason, "requires") && !strings.Contains(d.Reason, "watch") {
				t.Errorf("reason %q does not say what was refused", d.Reason)
			}
		})
	}
}

func TestCheckPath(t *testing.T) {
	tests := []struct {
		path string
		ok   bool
	}{
		{"/", true},
		{"/api/v1/nodes/pico-1", true},
		{"/api/v1/nodes/pico-1/", false},
		{"/api/v1//nodes", false},
		{"//api/v1/nodes", false},
		{"/api/v1/nodes/../secrets", false},
		{"/api/v1/./nodes", false},
		{"/api/v1/nodes/pico-1.", false},
		{"/api/v1/nodes/pico-1%2Fstatus", false},
		{"/api/v1/nodes/%2e%2e", false},
		{"/api/v1/nodes/pico 1", false},
		{"/api/v1/nodes/pico;1", false},
		{"api/v1/nodes", false},
		{"", false},
		{"/api/v1/nodes/\u00e9", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			err := CheckPath(tt.path)
			if (err == nil) != tt.ok {
				t.Fatalf("got %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrAmbiguousPath) {
				t.Errorf("got %v, want ErrAmbiguousPath", err)
			}
		})
	}
}

func TestParseQuery(t *testing.T) {
	tests := []struct {
		raw       string
		ok, watch bool
	}{
		{"", true, false},
		{"watch=1", true, true},
		{"watch=true&resourceVersion=5", true, true},
		{"watch=", true, true},
		{"watch", true, true},
		{"watch=false", true, false},
		{"watch=0", true, false},
		{"watch=FALSE", true, false},
		{"%77atch=1", true, true},
		{"watch=1&watch=0", false, false},
		{"watch=1&%77atch=0", false, false},
		{"a=1;b=2", false, false},
		{"a=%zz", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			q, err := ParseQuery(tt.raw)
			if (err == nil) != tt.ok {
				t.Fatalf("got %v, want ok=%v", err, tt.ok)
			}
			if err == nil && q.Watch() != tt.watch {
				t.Errorf("Watch: got %v, want %v", q.Watch(), tt.watch)
			}
		})
	}
}

func TestNewReportsEveryError(t *testing.T) {
	_, err := New([]Rule{
		{Name: "", Methods: []string{"GET"}, Path: "/a"},
		{Name: "b", Methods: []string{"BREW"}, Path: "/b"},
		{Name: "c", Methods: []string{"GET"}, Path: "c//d"},
	})
	if err == nil {
		t.Fatal("got no error, want three")
	}
	for _, want := range []string{"name is empty", `method "BREW"`, `path "c//d"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to mention %q", err, want)
		}
	}
}

func TestDefaultPolicyFileMatchesDefault(t *testing.T) {
	rules, err := Load(filepath.Join("..", "..", "deploy", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	a, b := mustDefault(t), func() *Policy {
		p, err := New(rules)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}()
	if len(a.rules) != len(b.rules) {
		t.Fatalf("got %d rules in the file, want %d (update deploy/policy.yaml to match Default)", len(b.rules), len(a.rules))
	}
	for i := range a.rules {
		if a.rules[i].Name != b.rules[i].Name || a.rules[i].Path != b.rules[i].Path || a.rules[i].methods != b.rules[i].methods || a.rules[i].Watch != b.rules[i].Watch {
			t.Errorf("rule %d: got %+v, want %+v", i, b.rules[i].Rule, a.rules[i].Rule)
		}
	}
	if _, err := os.Stat(filepath.Join("..", "..", "deploy", "policy.yaml")); err != nil {
		t.Fatal(err)
	}
}

func FuzzAllow(f *testing.F) {
	p := mustDefault(f)
	f.Add("GET", "/api/v1/pods", "fieldSelector=spec.nodeName%3Dpico-1&watch=1", "pico-1")
	f.Add("PATCH", "/api/v1/nodes/pico-1/status", "", "pico-1")
	f.Add("GET", "/api/v1/nodes/%2e%2e/x", "a=1&a=2", "")
	f.Fuzz(func(t *testing.T, method, path, rawQuery, self string) {
		if CheckPath(path) != nil {
			return
		}
		q, err := ParseQuery(rawQuery)
		if err != nil {
			return
		}
		d := p.Allow(Request{Method: method, Path: path, Query: q, Watch: q.Watch(), Self: self})
		if !d.Allowed() {
			return
		}
		// Anything allowed must name a node only as itself, and never be a cluster-wide secret/node list.
		if self != "" && strings.HasPrefix(path, "/api/v1/nodes/") {
			name, _, _ := strings.Cut(strings.TrimPrefix(path, "/api/v1/nodes/"), "/")
			if name != self {
				t.Fatalf("allowed %s %s for %q", method, path, self)
			}
		}
		if path == "/api/v1/pods" {
			if v, _ := q.Get("fieldSelector"); self != "" && v != "spec.nodeName="+self {
				t.Fatalf("allowed a pod list with selector %q for %q", v, self)
			}
		}
		if strings.HasSuffix(path, "/secrets") || path == "/api/v1/nodes" && method == "GET" {
			t.Fatalf("allowed %s %s", method, path)
		}
	})
}

func FuzzCheckPath(f *testing.F) {
	for _, s := range []string{"/api/v1/nodes/a", "/a/../b", "/a%2Fb", "//x", "/a/b."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		if CheckPath(path) != nil {
			return
		}
		if strings.Contains(path, "//") || strings.Contains(path, "/./") || strings.Contains(path, "/../") || strings.Contains(path, "%") || strings.HasSuffix(path, "/..") {
			t.Fatalf("accepted ambiguous path %q", path)
		}
	})
}
