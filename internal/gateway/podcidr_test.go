package gateway

import (
	"context"
	"net/http"
	"testing"

	"github.com/picogate/picogate/internal/registry"
)

func TestNodePodCIDRGuard(t *testing.T) {
	guard := NodePodCIDRGuard(func(context.Context) []string { return []string{"10.42.255.0/24"} })
	dev := Identity{kind: deviceIdentity, device: &registry.Device{Name: "pico-1"}}
	tests := []struct {
		name, method, path, ctype, body string
		want                            int // 0: allowed
	}{
		{"strategic merge patch setting a pod CIDR", "PATCH", "/api/v1/nodes/pico-1", "application/strategic-merge-patch+json", `{"spec":{"podCIDR":"192.0.2.1/32"}}`, 403},
		{"merge patch setting pod CIDRs", "PATCH", "/api/v1/nodes/pico-1", "application/merge-patch+json", `{"spec":{"podCIDRs":["192.0.2.1/32"]}}`, 403},
		{"an escaped key is the same key", "PATCH", "/api/v1/nodes/pico-1", "application/merge-patch+json", `{"spec":{"pod\u0043IDR":"192.0.2.1/32"}}`, 403},
		{"JSON patch adding one", "PATCH", "/api/v1/nodes/pico-1", "application/json-patch+json", `[{"op":"add","path":"/spec/podCIDR","value":"192.0.2.1/32"}]`, 403},
		{"JSON patch replacing the spec", "PATCH", "/api/v1/nodes/pico-1", "application/json-patch+json", `[{"op":"replace","path":"/spec","value":{"podCIDR":"192.0.2.1/32"}}]`, 403},
		{"JSON patch copying into it", "PATCH", "/api/v1/nodes/pico-1", "application/json-patch+json", `[{"op":"copy","from":"/metadata/name","path":"/spec/podCIDR"}]`, 403},
		{"a directive about it", "PATCH", "/api/v1/nodes/pico-1", "application/strategic-merge-patch+json", `{"spec":{"$setElementOrder/podCIDRs":["192.0.2.1/32"]}}`, 403},
		{"a retainKeys naming it", "PATCH", "/api/v1/nodes/pico-1", "application/strategic-merge-patch+json", `{"spec":{"$retainKeys":["podCIDR"],"podCIDR":null}}`, 403},
		{"PUT of the whole Node with another pod CIDR", "PUT", "/api/v1/nodes/pico-1", "application/json", `{"metadata":{"name":"pico-1"},"spec":{"podCIDR":"192.0.2.1/32","podCIDRs":["192.0.2.1/32"]}}`, 403},
		{"PUT of the whole Node as it is", "PUT", "/api/v1/nodes/pico-1", "application/json", `{"metadata":{"name":"pico-1"},"spec":{"podCIDR":"10.42.255.0/24","podCIDRs":["10.42.255.0/24"]}}`, 0},
		{"the firmware's label patch", "PATCH", "/api/v1/nodes/pico-1", "application/strategic-merge-patch+json", `{"metadata":{"labels":{"a":"b"}}}`, 0},
		{"the status subresource is not read", "PATCH", "/api/v1/nodes/pico-1/status", "application/strategic-merge-patch+json", `{"spec":{"podCIDR":"192.0.2.1/32"}}`, 0},
		{"not JSON", "PATCH", "/api/v1/nodes/pico-1", "application/merge-patch+json", `{"spec":`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &Inspection{Method: tt.method, Path: tt.path, ContentType: tt.ctype, Body: []byte(tt.body), Identity: dev, Context: context.Background()}
			e := guard(in)
			got := 0
			if e != nil {
				got = e.Code
			}
			if got != tt.want {
				t.Errorf("got %d (%v), want %d", got, e, tt.want)
			}
		})
	}
	// Without an identity the check leaves the request to the steps that refuse it.
	if e := guard(&Inspection{Method: http.MethodPatch, Path: "/api/v1/nodes/pico-1", Body: []byte(`{"spec":{"podCIDR":"x"}}`)}); e != nil {
		t.Errorf("anonymous: got %v, want nil", e)
	}
}
