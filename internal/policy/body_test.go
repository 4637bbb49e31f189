package policy

import (
	"errors"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"
)

func TestBodyCheck(t *testing.T) {
	tests := []struct {
		method, path string
		want         BodyKind
	}{
		{"POST", "/api/v1/nodes", BodyNodeCreate},
		{"PUT", "/api/v1/nodes", BodyNone},
		{"GET", "/api/v1/nodes", BodyNone},
		{"PATCH", "/api/v1/nodes/pico-1/status", BodyNone},
		{"POST", "/api/v1/namespaces/default/events", BodyEvent},
		{"PUT", "/api/v1/namespaces/default/events/e1", BodyEvent},
		{"PATCH", "/api/v1/namespaces/kube-system/events/e1", BodyEventPatch},
		{"POST", "/apis/events.k8s.io/v1/namespaces/default/events", BodyEvent},
		{"PATCH", "/apis/events.k8s.io/v1/namespaces/default/events/e1", BodyEventPatch},
		{"POST", "/apis/events.k8s.io/v1beta1/namespaces/default/events", BodyEvent},
		{"GET", "/api/v1/namespaces/default/events", BodyNone},
		{"DELETE", "/api/v1/namespaces/default/events/e1", BodyNone},
		{"POST", "/api/v1/namespaces/default/configmaps", BodyNone},
		{"POST", "/api/v1/namespaces/events", BodyNone},
		{"POST", "/api/v1/namespaces/events/pods", BodyNone},
		{"POST", "/apis/events.k8s.io/v1/events", BodyNone},
		{"POST", "/apis/other.io/v1/namespaces/default/events", BodyNone},
	}
	for _, tt := range tests {
		if got := BodyCheck(tt.method, tt.path); got != tt.want {
			t.Errorf("BodyCheck(%s %s): got %d, want %d", tt.method, tt.path, got, tt.want)
		}
	}
}

func firmwareNode(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("../e2e/testdata/firmware-node.json")
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer("@NAME@", "pico-1", "@IP@", "192.168.1.50", "@TIME@", "2026-12-01T09:00:00Z").Replace(string(b))
}

func TestParseNodeCreate(t *testing.T) {
	tests := []struct {
		name, ctype, body string
		want              string // the name, or the error's start
		err               error
	}{
		{"firmware's node", "application/json", firmwareNode(t), "pico-1", nil},
		{"minimal", "", `{"metadata":{"name":"pico-1"}}`, "pico-1", nil},
		{"charset", "application/json; charset=utf-8", `{"metadata":{"name":"pico-1"}}`, "pico-1", nil},
		{"escaped name", "application/json", `{"metadata":{"name":"pico\u002d2"}}`, "pico-2", nil},
		{"yaml", "application/yaml", "metadata:\n  name: pico-2\n", "", ErrBodyMediaType},
		{"protobuf", "application/vnd.kubernetes.protobuf", "k8s\x00", "", ErrBodyMediaType},
		{"cbor", "application/cbor", "\xa0", "", ErrBodyMediaType},
		{"bad content type", "application/", `{}`, "", ErrBodyMediaType},
		{"duplicate name", "application/json", `{"metadata":{"name":"pico-1","name":"pico-2"}}`, "", ErrBodyMalformed},
		{"duplicate name, escaped", "application/json", `{"metadata":{"name":"pico-1","na\u006de":"pico-2"}}`, "", ErrBodyMalformed},
		{"duplicate metadata", "application/json", `{"metadata":{"name":"pico-1"},"metadata":{"name":"pico-2"}}`, "", ErrBodyMalformed},
		{"upper-case key is not the name", "application/json", `{"metadata":{"Name":"pico-2"}}`, "", ErrBodyMalformed},
		{"second object", "application/json", `{"metadata":{"name":"pico-1"}} {"metadata":{"name":"pico-2"}}`, "", ErrBodyMalformed},
		{"trailing garbage", "application/json", `{"metadata":{"name":"pico-1"}}x`, "", ErrBodyMalformed},
		{"array", "application/json", `[{"metadata":{"name":"pico-1"}}]`, "", ErrBodyMalformed},
		{"null", "application/json", `null`, "", ErrBodyMalformed},
		{"empty", "application/json", ``, "", ErrBodyMalformed},
		{"truncated", "application/json", `{"metadata":{"name":"pico-1"}`, "", ErrBodyMalformed},
		{"no metadata", "application/json", `{"kind":"Node"}`, "", ErrBodyMalformed},
		{"no name", "application/json", `{"metadata":{}}`, "", ErrBodyMalformed},
		{"generateName", "application/json", `{"metadata":{"generateName":"pico-"}}`, "", ErrBodyForbidden},
		{"invalid name", "application/json", `{"metadata":{"name":"Pico_1"}}`, "", ErrBodyMalformed},
		{"name not a string", "application/json", `{"metadata":{"name":7}}`, "", ErrBodyMalformed},
		{"another kind", "application/json", `{"kind":"Pod","metadata":{"name":"pico-1"}}`, "", ErrBodyMalformed},
		{"another version", "application/json", `{"apiVersion":"v2","metadata":{"name":"pico-1"}}`, "", ErrBodyMalformed},
		{"labels not an object", "application/json", `{"metadata":{"name":"pico-1","labels":["a"]}}`, "", ErrBodyMalformed},
		{"label not a string", "application/json", `{"metadata":{"name":"pico-1","labels":{"a":1}}}`, "", ErrBodyMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := ParseNodeCreate(tt.ctype, []byte(tt.body))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("got %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil || n.Name != tt.want {
				t.Fatalf("got %v, %v, want name %s", n, err, tt.want)
			}
		})
	}
}

// apiServerDecoder decodes a body the way kube-apiserver's JSON serializer does.
type apiServerDecoder struct{ s *kjson.Serializer }

func newAPIServerDecoder() apiServerDecoder {
	return apiServerDecoder{kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme, kjson.SerializerOptions{})}
}

func (d apiServerDecoder) decode(body []byte, into runtime.Object) error {
	_, _, err := d.s.Decode(body, nil, into)
	return err
}

func TestNodeCreateWithLabel(t *testing.T) {
	in := firmwareNode(t)
	n, err := ParseNodeCreate("application/json", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	out, err := n.WithLabel("picogate.io/device", "true")
	if err != nil {
		t.Fatal(err)
	}
	dec := newAPIServerDecoder()
	var before, after corev1.Node
	if err := dec.decode([]byte(in), &before); err != nil {
		t.Fatal(err)
	}
	if err := dec.decode(out, &after); err != nil {
		t.Fatalf("the rewritten body does not decode: %v\n%s", err, out)
	}
	if after.Labels["picogate.io/device"] != "true" {
		t.Errorf("got labels %v, want the marker", after.Labels)
	}
	delete(after.Labels, "picogate.io/device")
	if before.String() != after.String() {
		t.Errorf("the rewrite changed more than the label:\n%s\n%s", before.String(), after.String())
	}
	t.Logf("firmware's Node: %d bytes, %d with the marker", len(in), len(out))
	// A sender's own value is replaced, and a Node without labels gets some.
	for _, body := range []string{`{"metadata":{"name":"x","labels":{"picogate.io/device":"false"}}}`, `{"metadata":{"name":"x","labels":null}}`, `{"metadata":{"name":"x"},"status":{"capacity":{"pods":"0"}},"spec":{"x":12345678901234567890}}`} {
		n, err := ParseNodeCreate("", []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		out, _ := n.WithLabel("picogate.io/device", "true")
		if !strings.Contains(string(out), `"labels":{"picogate.io/device":"true"}`) {
			t.Errorf("%s: got %s, want the marker as the only label", body, out)
		}
		if strings.Contains(body, "12345678901234567890") && !strings.Contains(string(out), "12345678901234567890") {
			t.Errorf("a number lost its text: %s", out)
		}
	}
}

func TestCheckEvent(t *testing.T) {
	const self = "pico-1"
	ev := func(field, kind, name string) string {
		return `{"metadata":{"generateName":"x."},"` + field + `":{"kind":"` + kind + `","name":"` + name + `"},"reason":"Booted"}`
	}
	tests := []struct {
		name  string
		kind  BodyKind
		ctype string
		body  string
		self  string
		err   error
	}{
		{"own node", BodyEvent, "application/json", ev("involvedObject", "Node", self), self, nil},
		{"a pod", BodyEvent, "application/json", ev("involvedObject", "Pod", "pico-2"), self, nil},
		{"another node", BodyEvent, "application/json", ev("involvedObject", "Node", "pico-2"), self, ErrBodyForbidden},
		{"another node, lower case kind", BodyEvent, "application/json", ev("involvedObject", "node", "pico-2"), self, ErrBodyForbidden},
		{"another node, no kind", BodyEvent, "application/json", `{"involvedObject":{"name":"pico-2"}}`, self, ErrBodyForbidden},
		{"another node as related", BodyEvent, "application/json", ev("involvedObject", "Node", self)[:len(ev("involvedObject", "Node", self))-1] + `,"related":{"kind":"Node","name":"pico-2"}}`, self, ErrBodyForbidden},
		{"events.k8s.io regarding another node", BodyEvent, "application/json", ev("regarding", "Node", "pico-2"), self, ErrBodyForbidden},
		{"events.k8s.io regarding own node", BodyEvent, "application/json", ev("regarding", "Node", self), self, nil},
		{"no sender node", BodyEvent, "application/json", ev("involvedObject", "Node", "pico-1"), "", ErrBodyForbidden},
		{"duplicate involvedObject", BodyEvent, "application/json", `{"involvedObject":{"kind":"Node","name":"pico-1"},"involvedObject":{"kind":"Node","name":"pico-2"}}`, self, ErrBodyMalformed},
		{"duplicate name", BodyEvent, "application/json", `{"involvedObject":{"kind":"Node","name":"pico-1","name":"pico-2"}}`, self, ErrBodyMalformed},
		{"reference not an object", BodyEvent, "application/json", `{"involvedObject":"pico-2"}`, self, ErrBodyMalformed},
		{"protobuf", BodyEvent, "application/vnd.kubernetes.protobuf", "k8s\x00", self, ErrBodyMediaType},
		{"merge patch of another node", BodyEventPatch, "application/merge-patch+json", `{"involvedObject":{"name":"pico-2"}}`, self, ErrBodyForbidden},
		{"strategic patch of the count", BodyEventPatch, "application/strategic-merge-patch+json", `{"count":2,"lastTimestamp":"2026-12-01T09:00:00Z"}`, self, nil},
		{"json patch of the count", BodyEventPatch, "application/json-patch+json", `[{"op":"replace","path":"/count","value":2}]`, self, nil},
		{"json patch of the name", BodyEventPatch, "application/json-patch+json", `[{"op":"replace","path":"/involvedObject/name","value":"pico-2"}]`, self, ErrBodyForbidden},
		{"json patch of regarding", BodyEventPatch, "application/json-patch+json", `[{"op":"add","path":"/regarding","value":{}}]`, self, ErrBodyForbidden},
		{"json patch moving from involvedObject", BodyEventPatch, "application/json-patch+json", `[{"op":"move","from":"/involvedObject","path":"/x"}]`, self, ErrBodyForbidden},
		{"json patch of the whole event", BodyEventPatch, "application/json-patch+json", `[{"op":"replace","path":"","value":{}}]`, self, ErrBodyForbidden},
		{"json patch with a duplicate key", BodyEventPatch, "application/json-patch+json", `[{"op":"replace","path":"/count","path":"/involvedObject/name","value":"pico-2"}]`, self, ErrBodyMalformed},
		{"json patch not an array", BodyEventPatch, "application/json-patch+json", `{"op":"replace"}`, self, ErrBodyMalformed},
		{"apply patch", BodyEventPatch, "application/apply-patch+yaml", `involvedObject: {name: pico-2}`, self, ErrBodyMediaType},
		{"json as a patch", BodyEventPatch, "application/json", `{}`, self, ErrBodyMediaType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckEvent(tt.kind, tt.ctype, []byte(tt.body), tt.self)
			if tt.err == nil && err != nil || tt.err != nil && !errors.Is(err, tt.err) {
				t.Errorf("got %v, want %v", err, tt.err)
			}
		})
	}
}

func TestCheckJSON(t *testing.T) {
	ok := []string{`{}`, `[]`, `1`, `"s"`, ` {"a":[{"a":1},{"a":2}],"b":{"a":{}}} `, `{"a":1e400}`, `[[],[{}]]`}
	bad := []string{``, ` `, `{"a":1,"a":2}`, `{"a":{"b":1,"b":1}}`, `[{"a":1,"a":1}]`, `{} {}`, `{}]`, `{"a":}`, `[`, `{"a":1`, "\xef\xbb\xbf{}"}
	for _, s := range ok {
		if err := checkJSON([]byte(s)); err != nil {
			t.Errorf("checkJSON(%q): got %v, want nil", s, err)
		}
	}
	for _, s := range bad {
		if err := checkJSON([]byte(s)); !errors.Is(err, ErrBodyMalformed) {
			t.Errorf("checkJSON(%q): got %v, want ErrBodyMalformed", s, err)
		}
	}
}

// FuzzParseNodeCreate: whatever the body, an accepted Node create names, as the API server reads it,
// exactly the Node the gateway read, and the marker label is the only change the rewrite makes.
func FuzzParseNodeCreate(f *testing.F) {
	f.Add(firmwareNode(f))
	f.Add(`{"metadata":{"name":"pico-1","name":"pico-2"}}`)
	f.Add(`{"metadata":{"Name":"pico-2","name":"pico-1"}}`)
	f.Add(`{"metadata":{"name":"pico\u002d1","labels":{"a":"b"}},"spec":{"taints":[{"key":"k","effect":"NoSchedule"}]}}`)
	f.Add(`{"kind":"Node","apiVersion":"v1","metadata":{"name":"p"}}`)
	dec := newAPIServerDecoder()
	f.Fuzz(func(t *testing.T, body string) {
		n, err := ParseNodeCreate("application/json", []byte(body))
		if err != nil {
			return
		}
		var as corev1.Node
		if err := dec.decode([]byte(body), &as); err != nil {
			return // the API server refuses it too
		}
		if as.Name != n.Name || as.GenerateName != "" && as.Name == "" {
			t.Fatalf("gateway read name %q, the API server %q (generateName %q)", n.Name, as.Name, as.GenerateName)
		}
		out, err := n.WithLabel("picogate.io/device", "true")
		if err != nil {
			t.Fatal(err)
		}
		var marked corev1.Node
		if err := dec.decode(out, &marked); err != nil {
			t.Fatalf("rewritten body does not decode: %v: %s", err, out)
		}
		if marked.Labels["picogate.io/device"] != "true" || marked.Name != n.Name {
			t.Fatalf("rewritten body: name %q labels %v", marked.Name, marked.Labels)
		}
		delete(marked.Labels, "picogate.io/device")
		delete(as.Labels, "picogate.io/device")
		if len(marked.Labels) == 0 {
			marked.Labels = nil
		}
		if len(as.Labels) == 0 {
			as.Labels = nil
		}
		if as.String() != marked.String() {
			t.Fatalf("the rewrite changed more than the label:\n%s\n%s", as.String(), marked.String())
		}
	})
}

// FuzzCheckEvent: an accepted event names, as the API server reads it, no Node but the sender's own.
func FuzzCheckEvent(f *testing.F) {
	f.Add(`{"involvedObject":{"kind":"Node","name":"pico-1"},"reason":"Booted"}`, "pico-1")
	f.Add(`{"involvedObject":{"kind":"Pod","name":"p"},"related":{"kind":"Node","name":"pico-2"}}`, "pico-1")
	f.Add(`{"regarding":{"kind":"Node","name":"pico-2"}}`, "pico-1")
	f.Add(`{"involvedObject":{"kind":"Node","name":"pico-1","name":"pico-2"}}`, "pico-1")
	dec := newAPIServerDecoder()
	f.Fuzz(func(t *testing.T, body, self string) {
		if CheckEvent(BodyEvent, "application/json", []byte(body), self) != nil {
			return
		}
		bad := func(field string, ref *corev1.ObjectReference) {
			if ref != nil && (ref.Kind == "" || strings.EqualFold(ref.Kind, "Node")) && ref.Name != "" && ref.Name != self {
				t.Fatalf("accepted an event whose %s is node %q for sender %q", field, ref.Name, self)
			}
		}
		var core corev1.Event
		if dec.decode([]byte(body), &core) == nil {
			bad("involvedObject", &core.InvolvedObject)
			bad("related", core.Related)
		}
		var ev eventsv1.Event
		if dec.decode([]byte(body), &ev) == nil {
			bad("regarding", &ev.Regarding)
			bad("related", ev.Related)
		}
	})
}

func TestSharedScope(t *testing.T) {
	p, err := New(SharedScope())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, path string
		allowed      bool
	}{
		{"POST", "/api/v1/nodes", true},
		{"PATCH", "/api/v1/nodes/pico-9/status", true},
		{"GET", "/api/v1/namespaces/default/configmaps/pico-config", true},
		{"GET", "/version", true},
		{"GET", "/api/v1/nodes/pico-9", false},
		{"PATCH", "/api/v1/nodes/pico-9", false},
		{"PUT", "/api/v1/nodes/pico-9/status", false},
		{"GET", "/api/v1/nodes/pico-9/status", false},
		{"GET", "/api/v1/pods", false},
		{"GET", "/api/v1/namespaces/kube-system/secrets/x", false},
		{"POST", "/api/v1/namespaces/default/events", false},
		{"POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", false},
	}
	for _, tt := range tests {
		if got := p.Allow(Request{Method: tt.method, Path: tt.path}).Allowed(); got != tt.allowed {
			t.Errorf("%s %s: got allowed=%v, want %v", tt.method, tt.path, got, tt.allowed)
		}
	}
	for path, want := range map[string]string{"/api/v1/nodes/pico-9/status": "pico-9", "/api/v1/nodes/status": "", "/api/v1/nodes/a/b/status": "", "/api/v1/nodes/pico-9": "", "/api/v1/nodes//status": ""} {
		if got := SharedNode(path); got != want {
			t.Errorf("SharedNode(%s): got %q, want %q", path, got, want)
		}
	}
}
