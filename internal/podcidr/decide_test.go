package podcidr

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func node(name, args string, podCIDRs ...string) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: podCIDRs}}
	if len(podCIDRs) > 0 {
		n.Spec.PodCIDR = podCIDRs[0]
	}
	if args != "" {
		n.Annotations = map[string]string{NodeArgsAnnotation: args}
	}
	return n
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, v := range s {
		out = append(out, netip.MustParsePrefix(v))
	}
	return out
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name     string
		settings Settings
		real     []corev1.Node
		want     string // the pod CIDRs, comma-separated; "" for none
		why      string // part of Decision.Why
	}{
		{"k3s server with no --cluster-cidr, its own CIDR confirms the default",
			Settings{}, []corev1.Node{node("server-1", `["server"]`, "10.42.0.0/24")},
			"10.42.255.0/24", "k3s's default"},
		{"k3s server with no --cluster-cidr and no pod CIDR anywhere",
			Settings{}, []corev1.Node{node("server-1", `["server","--disable-agent"]`)},
			"", "no node's pod CIDR shows k3s's default"},
		{"IPv6-only k3s: its default is another network",
			Settings{}, []corev1.Node{node("server-1", `["server","--node-ip","fd00::1"]`, "fd00:42::/64")},
			"", "no node's pod CIDR shows"},
		{"k3s server with --cluster-cidr split in two, as k3s records it",
			Settings{}, []corev1.Node{node("server-1", `["server","--cluster-cidr","10.100.0.0/20","--tls-san","x"]`), node("agent-1", `["agent","--server","https://x:6443","--token","********"]`, "10.100.0.0/24")},
			"10.100.15.0/24", "k3s.io/node-args of k3s server server-1"},
		{"k3s server with --cluster-cidr=value",
			Settings{}, []corev1.Node{node("server-1", `["server","--cluster-cidr=10.100.0.0/20"]`)},
			"10.100.15.0/24", "server-1"},
		{"k3s dual-stack",
			Settings{}, []corev1.Node{node("server-1", `["server","--cluster-cidr","10.42.0.0/16,fd00:42::/56"]`, "10.42.0.0/24", "fd00:42::/64")},
			"10.42.255.0/24,fd00:42:0:ff::/64", "server-1"},
		{"k3s with the controller manager's node mask changed",
			Settings{}, []corev1.Node{node("server-1", `["server","--cluster-cidr","10.42.0.0/16","--kube-controller-manager-arg","node-cidr-mask-size=26"]`)},
			"10.42.255.192/26", "server-1"},
		{"the mask the real nodes have",
			Settings{ClusterCIDRs: prefixes("10.42.0.0/16")}, []corev1.Node{node("a", "", "10.42.0.0/25"), node("b", "", "10.42.0.128/25")},
			"10.42.255.128/25", "--cluster-cidr"},
		{"two k3s servers that disagree",
			Settings{}, []corev1.Node{node("s1", `["server","--cluster-cidr","10.42.0.0/16"]`), node("s2", `["server","--cluster-cidr","10.52.0.0/16"]`)},
			"", "different cluster CIDRs"},
		{"a k3s annotation that is not understood",
			Settings{}, []corev1.Node{node("s1", `["server","--cluster-cidr","ten.42/16"]`)},
			"", "s1's k3s.io/node-args"},
		{"no k3s and no flag",
			Settings{}, []corev1.Node{node("worker-1", "", "10.244.0.0/24")},
			"", "the cluster CIDR is unknown"},
		{"kubeadm cluster with --cluster-cidr given",
			Settings{ClusterCIDRs: prefixes("10.244.0.0/16")}, []corev1.Node{node("worker-1", "", "10.244.0.0/24")},
			"10.244.255.0/24", "--cluster-cidr"},
		{"a real node outside the cluster CIDR given: the flag is wrong",
			Settings{ClusterCIDRs: prefixes("10.42.0.0/16")}, []corev1.Node{node("worker-1", "", "10.244.0.0/24")},
			"", "node worker-1 has pod CIDR 10.244.0.0/24, outside 10.42.0.0/16"},
		{"a real node with more pod CIDRs than the cluster has families",
			Settings{ClusterCIDRs: prefixes("10.42.0.0/16")}, []corev1.Node{node("worker-1", "", "10.42.0.0/24", "fd00::/64")},
			"", "has 2 pod CIDRs"},
		{"a real node already has the last block",
			Settings{}, []corev1.Node{node("server-1", `["server"]`, "10.42.0.0/24"), node("worker-9", "", "10.42.255.0/24")},
			"", "node worker-9, not a device's, has pod CIDR 10.42.255.0/24"},
		{"turned off",
			Settings{Off: true}, []corev1.Node{node("server-1", `["server"]`, "10.42.0.0/24")},
			"", "turned off"},
		{"the operator's block, inside the known cluster CIDR",
			Settings{Block: prefixes("10.42.128.0/24")}, []corev1.Node{node("server-1", `["server"]`, "10.42.0.0/24")},
			"10.42.128.0/24", "--device-pod-cidr, inside the cluster CIDR 10.42.0.0/16"},
		{"the operator's block, outside the known cluster CIDR",
			Settings{Block: prefixes("192.0.2.0/24")}, []corev1.Node{node("server-1", `["server"]`, "10.42.0.0/24")},
			"", "192.0.2.0/24 is not a part of the cluster CIDR 10.42.0.0/16"},
		{"the operator's block when the cluster CIDR is unknown: their word",
			Settings{Block: prefixes("10.244.255.0/24")}, nil,
			"10.244.255.0/24", "the cluster CIDR unknown"},
		{"the operator's block, a real node holds it",
			Settings{Block: prefixes("10.244.255.0/24")}, []corev1.Node{node("w", "", "10.244.255.0/24")},
			"", "node w, not a device's"},
		{"a cluster CIDR with one node block only",
			Settings{ClusterCIDRs: prefixes("10.42.0.0/24")}, nil,
			"", "holds one node block at most"},
		{"the small cluster CIDR of the tests",
			Settings{ClusterCIDRs: prefixes("10.42.0.0/22")}, nil,
			"10.42.3.0/24", "--cluster-cidr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.settings, tt.real)
			if got := strings.Join(d.Strings(), ","); got != tt.want {
				t.Errorf("got pod CIDRs %q (%s), want %q", got, d.Why, tt.want)
			}
			if !strings.Contains(d.Why, tt.why) {
				t.Errorf("got why %q, want it to contain %q", d.Why, tt.why)
			}
		})
	}
}

func TestLastBlock(t *testing.T) {
	tests := []struct {
		cluster string
		mask    int
		want    string
	}{
		{"10.42.0.0/16", 24, "10.42.255.0/24"},
		{"10.42.0.0/22", 24, "10.42.3.0/24"},
		{"10.0.0.0/8", 20, "10.255.240.0/20"},
		{"10.42.0.0/16", 32, "10.42.255.255/32"},
		{"fd00:42::/56", 64, "fd00:42:0:ff::/64"},
		{"2001:db8::/48", 64, "2001:db8:0:ffff::/64"},
	}
	for _, tt := range tests {
		got, err := lastBlock(netip.MustParsePrefix(tt.cluster), tt.mask)
		if err != nil || got.String() != tt.want {
			t.Errorf("lastBlock(%s, %d): got %s, %v, want %s", tt.cluster, tt.mask, got, err, tt.want)
		}
	}
	for _, bad := range []struct {
		cluster string
		mask    int
	}{{"10.42.0.0/16", 16}, {"10.42.0.0/16", 33}, {"fd00::/48", 80}} {
		if got, err := lastBlock(netip.MustParsePrefix(bad.cluster), bad.mask); err == nil {
			t.Errorf("lastBlock(%s, %d): got %s, want an error", bad.cluster, bad.mask, got)
		}
	}
}

func FuzzParseK3sArgs(f *testing.F) {
	for _, s := range []string{`["server"]`, `["server","--cluster-cidr","10.42.0.0/16,fd00:42::/56"]`,
		`["server","--kube-controller-manager-arg","node-cidr-mask-size-ipv4=25","--cluster-cidr="]`, `{}`, `["agent","--cluster-cidr"]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, annotation string) {
		args, ok, err := parseK3sArgs(annotation)
		if !ok && (err != nil || args.server || args.clusterCIDRs != nil) {
			t.Fatalf("got %+v, %v for an annotation not understood, want nothing", args, err)
		}
		// Whatever the annotation says, a decision never names a block outside what it read.
		d := Decide(Settings{}, []corev1.Node{node("s", annotation, "10.42.0.0/24")})
		for i, p := range d.PodCIDRs {
			if err != nil || i >= len(args.clusterCIDRs) && !within(p, netip.MustParsePrefix(K3sDefaultClusterCIDR)) {
				t.Fatalf("got block %s from %q (%v), want none", p, annotation, err)
			}
			if i < len(args.clusterCIDRs) && !within(p, args.clusterCIDRs[i]) {
				t.Fatalf("got block %s outside %s", p, args.clusterCIDRs[i])
			}
		}
	})
}

func TestParseSettings(t *testing.T) {
	tests := []struct {
		device, cluster string
		mask            int
		want            string // Settings printed, or the error's part
	}{
		{"auto", "", 0, "{Off:false Block:[] ClusterCIDRs:[] NodeMaskV4:0 NodeMaskV6:0}"},
		{"", "10.42.0.0/16,fd00:42::/56", 0, "{Off:false Block:[] ClusterCIDRs:[10.42.0.0/16 fd00:42::/56] NodeMaskV4:0 NodeMaskV6:0}"},
		{"none", "", 0, "{Off:true Block:[] ClusterCIDRs:[] NodeMaskV4:0 NodeMaskV6:0}"},
		{"10.42.255.0/24", "", 24, "{Off:false Block:[10.42.255.0/24] ClusterCIDRs:[] NodeMaskV4:24 NodeMaskV6:24}"},
		{"auto", "", 64, "{Off:false Block:[] ClusterCIDRs:[] NodeMaskV4:0 NodeMaskV6:64}"},
		{"10.42.255.1/24", "", 0, "not a network address (10.42.255.0/24 is)"},
		{"auto", "10.42.0.0/16,10.43.0.0/16", 0, "want one CIDR, or one per IP family"},
		{"none", "10.42.0.0/16", 0, "have nothing to do"},
		{"auto", "", 129, "want a prefix length"},
		{"sometimes", "", 0, "--device-pod-cidr"},
	}
	for _, tt := range tests {
		s, err := ParseSettings(tt.device, tt.cluster, tt.mask)
		got := fmt.Sprintf("%+v", s)
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, tt.want) {
			t.Errorf("ParseSettings(%q, %q, %d): got %s, want %s", tt.device, tt.cluster, tt.mask, got, tt.want)
		}
	}
}
