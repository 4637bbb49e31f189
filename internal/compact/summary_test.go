package compact

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func TestAppendSummary(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"node after an outage",
			`{"kind":"Node","apiVersion":"v1","metadata":{"name":"pico-1","uid":"u-1","resourceVersion":"42","labels":{"a":"b"},"annotations":{"x":"y"}},"spec":{"taints":[{"key":"node.kubernetes.io/unreachable","effect":"NoSchedule","timeAdded":"2026-12-03T10:00:00Z"}]},"status":{"conditions":[{"type":"Ready","status":"Unknown","reason":"NodeStatusUnknown","message":"Kubelet stopped posting node status."},{"type":"MemoryPressure","status":"Unknown","message":"Kubelet stopped posting node status."}],"addresses":[{"type":"InternalIP","address":"10.0.0.1"}]}}`,
			`{"kind":"Node","apiVersion":"v1","metadata":{"name":"pico-1","uid":"u-1","resourceVersion":"42"},"status":{"conditions":[{"type":"Ready","status":"Unknown"},{"type":"MemoryPressure","status":"Unknown"}]}}`},
		{"namespaced object without conditions",
			`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","namespace":"default","uid":"u","resourceVersion":"7"},"data":{"k":"v"}}`,
			`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","namespace":"default","uid":"u","resourceVersion":"7"}}`},
		{"whitespace and member order",
			"{ \"status\" : { \"conditions\" : [ { \"status\" : \"True\" , \"type\" : \"Ready\" } ] } , \"metadata\" : { \"uid\" : \"u\" } , \"kind\" : \"Node\" }",
			`{"kind":"Node","metadata":{"uid":"u"},"status":{"conditions":[{"type":"Ready","status":"True"}]}}`},
		{"escapes kept", `{"metadata":{"name":"a\u0062"}}`, `{"metadata":{"name":"a\u0062"}}`},
		{"empty object", `{}`, `{}`},
		{"conditions not a list", `{"status":{"conditions":{}}}`, `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AppendSummary([]byte("keep:"), []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "keep:"+tt.want {
				t.Errorf("got %s, want keep:%s", got, tt.want)
			}
			if !json.Valid(got[len("keep:"):]) {
				t.Errorf("got invalid JSON %s", got)
			}
		})
	}
	for _, bad := range []string{`[1]`, `{"a":`, `{"a":1}x`, `"s"`, ``} {
		if got, err := AppendSummary([]byte("keep:"), []byte(bad)); err == nil || string(got) != "keep:" {
			t.Errorf("AppendSummary(%q): got %q, %v, want an error and dst unchanged", bad, got, err)
		}
	}
}

// TestAppendSummaryGolden: a Node as the API server answers it, summarized, is a few hundred bytes.
func TestAppendSummaryGolden(t *testing.T) {
	src, err := os.ReadFile("testdata/node-status-full.input.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := AppendSummary(nil, src)
	if err != nil {
		t.Fatal(err)
	}
	var n struct {
		Metadata struct{ Name, UID, ResourceVersion string }
		Status   struct {
			Conditions []struct{ Type, Status string }
		}
	}
	if err := json.Unmarshal(got, &n); err != nil || n.Metadata.Name == "" || n.Metadata.UID == "" || n.Metadata.ResourceVersion == "" || len(n.Status.Conditions) == 0 {
		t.Errorf("got %s (%v), want the name, uid, resourceVersion and conditions", got, err)
	}
	if strings.Contains(string(got), "message") || len(got) > 512 {
		t.Errorf("got %d bytes: %s, want a summary under 512", len(got), got)
	}
	t.Logf("a %d-byte Node summarized: %d bytes", len(src), len(got))
}

func FuzzAppendSummary(f *testing.F) {
	for _, s := range []string{`{"kind":"Node","metadata":{"name":"p"},"status":{"conditions":[{"type":"Ready","status":"True"}]}}`, `{"status":{"conditions":[1,{"type":2}]}}`, `{"metadata":[]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		got, err := AppendSummary(nil, src)
		if err != nil {
			return
		}
		if !json.Valid(got) {
			t.Fatalf("got invalid JSON %q from %q", got, src)
		}
		if !json.Valid(src) {
			t.Fatalf("summarized invalid JSON %q", src)
		}
	})
}
