package policy

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestNodeCreateSetPodCIDRs(t *testing.T) {
	dec := newAPIServerDecoder()
	tests := []struct {
		name  string
		body  string
		cidrs []string
	}{
		{"the firmware's Node gets the block", firmwareNode(t), []string{"10.42.255.0/24"}},
		{"dual-stack", `{"metadata":{"name":"x"}}`, []string{"10.42.255.0/24", "fd00:42:0:ff::/64"}},
		{"a device's own pod CIDR is replaced", `{"metadata":{"name":"x"},"spec":{"podCIDR":"192.0.2.1/32","podCIDRs":["192.0.2.1/32"],"taints":[]}}`, []string{"10.42.255.0/24"}},
		{"a device's own pod CIDR is removed when there is no block", `{"metadata":{"name":"x"},"spec":{"podCIDR":"192.0.2.1/32","podCIDRs":["192.0.2.1/32"]}}`, nil},
		{"no block, no spec", `{"metadata":{"name":"x"}}`, nil},
		{"spec null", `{"metadata":{"name":"x"},"spec":null}`, []string{"10.42.3.0/24"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := ParseNodeCreate("application/json", []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if err := n.SetPodCIDRs(tt.cidrs); err != nil {
				t.Fatal(err)
			}
			out, err := n.WithLabel("picogate.io/device", "true")
			if err != nil {
				t.Fatal(err)
			}
			var before, after corev1.Node
			if err := dec.decode([]byte(tt.body), &before); err != nil {
				t.Fatal(err)
			}
			if err := dec.decode(out, &after); err != nil {
				t.Fatalf("the rewritten body does not decode: %v\n%s", err, out)
			}
			want := tt.cidrs
			wantFirst := ""
			if len(want) > 0 {
				wantFirst = want[0]
			}
			if after.Spec.PodCIDR != wantFirst || !slices.Equal(after.Spec.PodCIDRs, want) {
				t.Errorf("got podCIDR %q podCIDRs %q, want %q %q", after.Spec.PodCIDR, after.Spec.PodCIDRs, wantFirst, want)
			}
			if after.Labels["picogate.io/device"] != "true" {
				t.Errorf("got labels %v, want the marker too", after.Labels)
			}
			before.Spec.PodCIDR, before.Spec.PodCIDRs = after.Spec.PodCIDR, after.Spec.PodCIDRs
			delete(after.Labels, "picogate.io/device")
			if len(after.Labels) == 0 {
				after.Labels = nil
			}
			if before.String() != after.String() {
				t.Errorf("the rewrite changed more than the pod CIDRs and the label:\n%s\n%s", before.String(), after.String())
			}
		})
	}
	n, err := ParseNodeCreate("application/json", []byte(`{"metadata":{"name":"x"},"spec":"nope"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.SetPodCIDRs([]string{"10.42.255.0/24"}); err == nil {
		t.Errorf("spec a string: got no error, want one")
	}
}
