package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/picogate/picogate/internal/controlplane"
	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
	"github.com/picogate/picogate/internal/gatewaytest"
	"github.com/picogate/picogate/internal/podcidr"
)

// ipamClusterCIDR is kube-controller-manager's --cluster-cidr in these tests: a /22, four /24 node
// CIDRs instead of k3s's 256, so running out takes five Nodes, not 257. Everything else is as k3s runs
// it: --allocate-node-cidrs, a /24 per node, the 50 s grace period.
const ipamClusterCIDR = "10.42.0.0/22"

// ipamCluster is a control plane of its own, with kube-controller-manager allocating node CIDRs, and a
// Node that looks like a k3s server's: it carries k3s's record of its arguments, which is where the
// gateway reads the cluster CIDR from when the operator tells it nothing.
type ipamCluster struct {
	cp *controlplane.ControlPlane
	cs kubernetes.Interface
}

func startIPAMCluster(t *testing.T) *ipamCluster {
	t.Helper()
	cp := controlplanetest.Start(t, controlplane.Config{ControllerManager: true, NodeIPAM: true, ClusterCIDR: ipamClusterCIDR})
	c := &ipamCluster{cp: cp, cs: kubernetes.NewForConfigOrDie(cp.AdminConfig())}
	server := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "k3s-server-1", Annotations: map[string]string{
		podcidr.NodeArgsAnnotation: `["server","--cluster-cidr","` + ipamClusterCIDR + `","--write-kubeconfig-mode","0644"]`,
	}}}
	if _, err := c.cs.CoreV1().Nodes().Create(context.Background(), server, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := c.waitPodCIDR(t, "k3s-server-1"); got != "10.42.0.0/24" {
		t.Fatalf("got the k3s server's pod CIDR %s, want the first block, 10.42.0.0/24", got)
	}
	return c
}

func (c *ipamCluster) gateway(t *testing.T, args ...string) *gatewaytest.Gateway {
	t.Helper()
	return gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: c.cp.AdminKubeconfig(), Args: args})
}

// board registers a token device, sends its firmware's Node create through gw and returns the header
// the firmware adds for it.
func (c *ipamCluster) board(t *testing.T, gw *gatewaytest.Gateway, name string) string {
	t.Helper()
	cmd := exec.Command(gatewaytest.Binary(t, "picogate"), "device", "add", name, "-o", "json", "--kubeconfig", c.cp.AdminKubeconfig())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("picogate device add %s: %v", name, err)
	}
	var cred credential
	if err := json.Unmarshal(out, &cred); err != nil {
		t.Fatal(err)
	}
	header := "Authorization: Bearer " + cred.Token
	c.register(t, gw, name, firmwareNode(t, name, "127.0.0.1"), header)
	return header
}

// register sends a device's Node create, as the firmware does at boot, and wants it created.
func (c *ipamCluster) register(t *testing.T, gw *gatewaytest.Gateway, name, body, header string) {
	t.Helper()
	var r firmwareResponse
	gatewaytest.WaitFor(context.Background(), 10*time.Second, func() bool {
		r = firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", body, header)
		return r.code != 401 // the gateway's registry sees a new device within moments
	})
	if r.code != 201 {
		t.Fatalf("POST node %s: got %d %s, want 201", name, r.code, r.body)
	}
}

// realNode creates a Node as a kubelet would, without a pod CIDR.
func (c *ipamCluster) realNode(t *testing.T, name string) {
	t.Helper()
	if _, err := c.cs.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitPodCIDR waits for the allocator to give name a pod CIDR, or fails saying why it did not.
func (c *ipamCluster) waitPodCIDR(t *testing.T, name string) string {
	t.Helper()
	var got string
	if !gatewaytest.WaitFor(context.Background(), time.Minute, func() bool {
		n, err := c.cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err == nil {
			got = n.Spec.PodCIDR
		}
		return got != "" || c.cidrNotAvailable(t, name)
	}) || got == "" {
		t.Fatalf("node %s: got no pod CIDR (CIDRNotAvailable: %v), want one", name, c.cidrNotAvailable(t, name))
	}
	return got
}

// cidrNotAvailable reports whether the allocator recorded that it had no CIDR left for name.
func (c *ipamCluster) cidrNotAvailable(t *testing.T, name string) bool {
	t.Helper()
	evs, err := c.cs.CoreV1().Events("").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name + ",reason=CIDRNotAvailable"})
	return err == nil && len(evs.Items) > 0
}

// podCIDRs returns every Node's pod CIDR, by name.
func (c *ipamCluster) podCIDRs(t *testing.T) map[string]string {
	t.Helper()
	list, err := c.cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range list.Items {
		out[n.Name] = n.Spec.PodCIDR + " " + strings.Join(n.Spec.PodCIDRs, ",")
	}
	return out
}

// checkRunning fails t unless kube-controller-manager is up and has not complained about a pod CIDR.
func (c *ipamCluster) checkRunning(t *testing.T) {
	t.Helper()
	if running, err := c.cp.Running(controlplane.ControllerManager); !running {
		t.Fatalf("got kube-controller-manager not running: %v", err)
	}
	if log := c.cp.LogTail(controlplane.ControllerManager, 2000); strings.Contains(log, "failed to mark cidr") {
		t.Errorf("got kube-controller-manager complaining about a pod CIDR:\n%s", log)
	}
}

// TestBoardsLeavePodCIDRsToRealNodes: five boards through the gateway, with nothing told to the gateway
// and nothing changed in "k3s", share one block (the last), and real nodes that join later still get
// theirs, also after kube-controller-manager restarts with the boards registered, through a second
// gateway, and after a board's Node is deleted and registered again. Before, 3 of the 5 boards took the 3 blocks the server left
// and the first real node got none (CIDRNotAvailable).
func TestBoardsLeavePodCIDRsToRealNodes(t *testing.T) {
	c := startIPAMCluster(t)
	gw := c.gateway(t)
	const shared = "10.42.3.0/24 10.42.3.0/24" // spec.podCIDR, spec.podCIDRs
	headers := map[string]string{}
	for i := 1; i <= 5; i++ {
		name := fmt.Sprintf("ipam-pico-%d", i)
		headers[name] = c.board(t, gw, name)
	}
	cidrs := c.podCIDRs(t)
	for i := 1; i <= 5; i++ {
		if got := cidrs[fmt.Sprintf("ipam-pico-%d", i)]; got != shared {
			t.Errorf("board ipam-pico-%d: got pod CIDRs %q, want the last block for every board, %q", i, got, shared)
		}
	}
	// Which free block a real node gets depends on the allocator's history (two events for one Node
	// can cost it a candidate); that it gets one, not the boards', is the point.
	taken := map[string]string{"10.42.0.0/24": "k3s-server-1", "10.42.3.0/24": "the boards"}
	freeBlock := func(name string) {
		t.Helper()
		got := c.waitPodCIDR(t, name)
		if !strings.HasPrefix(got, "10.42.") || !strings.HasSuffix(got, ".0/24") || taken[got] != "" {
			t.Errorf("%s: got pod CIDR %s, want a free /24 of %s (taken: %v)", name, got, ipamClusterCIDR, taken)
		}
		taken[got] = name
	}
	c.realNode(t, "worker-1")
	freeBlock("worker-1")

	t.Run("controller-manager restart with the boards registered", func(t *testing.T) {
		if err := c.cp.StopControllerManager(); err != nil {
			t.Fatal(err)
		}
		if err := c.cp.StartControllerManager(t.Context()); err != nil {
			t.Fatal(err)
		}
		// Registered after the restart, through a second gateway that decides on its own: the same block.
		headers["ipam-pico-6"] = c.board(t, c.gateway(t), "ipam-pico-6")
		// A real node's CIDR after the restart shows the allocator came up with the boards' Nodes read.
		c.realNode(t, "worker-2")
		freeBlock("worker-2")
		if got := c.podCIDRs(t)["ipam-pico-6"]; got != shared {
			t.Errorf("board ipam-pico-6: got pod CIDRs %q, want %q", got, shared)
		}
		c.checkRunning(t)
	})

	t.Run("a board's Node deleted and registered again", func(t *testing.T) {
		// The delete releases the block although five boards still name it; the board registering again
		// (the firmware POSTs its Node at every boot) marks it used again. Every block is then taken, so
		// a third real node gets none rather than the boards' block.
		if err := c.cs.CoreV1().Nodes().Delete(context.Background(), "ipam-pico-1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		c.register(t, gw, "ipam-pico-1", firmwareNode(t, "ipam-pico-1", "127.0.0.1"), headers["ipam-pico-1"])
		if got := c.podCIDRs(t)["ipam-pico-1"]; got != shared {
			t.Errorf("board ipam-pico-1 registered again: got pod CIDRs %q, want %q", got, shared)
		}
		c.realNode(t, "worker-3")
		if !gatewaytest.WaitFor(context.Background(), time.Minute, func() bool { return c.cidrNotAvailable(t, "worker-3") }) {
			t.Fatalf("worker-3: got no CIDRNotAvailable, want every block taken (pod CIDRs %v)", c.podCIDRs(t))
		}
		if got := c.podCIDRs(t)["worker-3"]; got != " " {
			t.Errorf("worker-3: got pod CIDRs %q, want none: the boards' block is theirs again", got)
		}
		c.checkRunning(t)
	})
}

// TestDevicePodCIDRNeverOutsideTheCluster: when the gateway cannot show a block lies inside the cluster
// CIDR (here: no k3s server Node and no --cluster-cidr), or is told one that is not, device Nodes name
// none and the allocator gives each a block, as before; a device's own pod CIDR is never kept, and the
// controller manager keeps starting.
func TestDevicePodCIDRNeverOutsideTheCluster(t *testing.T) {
	cp := controlplanetest.Start(t, controlplane.Config{ControllerManager: true, NodeIPAM: true, ClusterCIDR: ipamClusterCIDR})
	c := &ipamCluster{cp: cp, cs: kubernetes.NewForConfigOrDie(cp.AdminConfig())}
	tests := []struct {
		name string
		args []string
		why  string // in the gateway's log
	}{
		{"cluster CIDR unknown", nil, "the cluster CIDR is unknown"},
		{"a wrong --cluster-cidr contradicted by a real node", []string{"--cluster-cidr", "10.52.0.0/16"}, "outside 10.52.0.0/16"},
		{"a --device-pod-cidr outside the --cluster-cidr", []string{"--cluster-cidr", ipamClusterCIDR, "--device-pod-cidr", "192.0.2.0/24"}, "192.0.2.0/24 is not a part of the cluster CIDR"},
	}
	c.realNode(t, "worker-0")
	c.waitPodCIDR(t, "worker-0")
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := c.gateway(t, tt.args...)
			name := fmt.Sprintf("outside-pico-%d", i)
			// The firmware never sends one, but a device could: the gateway replaces it.
			body := strings.Replace(firmwareNode(t, name, "127.0.0.1"), `"spec":{}`, `"spec":{"podCIDR":"192.0.2.1/32","podCIDRs":["192.0.2.1/32"]}`, 1)
			if !strings.Contains(body, "192.0.2.1/32") {
				t.Fatalf("test body has no spec to add a pod CIDR to: %s", body)
			}
			cmd := exec.Command(gatewaytest.Binary(t, "picogate"), "device", "add", name, "-o", "json", "--kubeconfig", cp.AdminKubeconfig())
			out, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			var cred credential
			if err := json.Unmarshal(out, &cred); err != nil {
				t.Fatal(err)
			}
			c.register(t, gw, name, body, "Authorization: Bearer "+cred.Token)
			got := c.waitPodCIDR(t, name)
			if !strings.HasPrefix(got, "10.42.") {
				t.Errorf("got pod CIDR %s, want one the allocator gave, in %s", got, ipamClusterCIDR)
			}
			if !strings.Contains(gw.Log(), tt.why) {
				t.Errorf("got gateway log without %q, want the reason logged:\n%s", tt.why, gw.Log())
			}
		})
	}
	if err := c.cp.StopControllerManager(); err != nil {
		t.Fatal(err)
	}
	if err := c.cp.StartControllerManager(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Every block is taken now (worker-0 and the three boards, a block each): a real node created after
	// the restart gets CIDRNotAvailable, which shows the allocator came up with the boards' Nodes read.
	c.realNode(t, "worker-late")
	if !gatewaytest.WaitFor(context.Background(), time.Minute, func() bool { return c.cidrNotAvailable(t, "worker-late") }) {
		t.Fatalf("worker-late: got no CIDRNotAvailable after the restart (pod CIDRs %v)", c.podCIDRs(t))
	}
	c.checkRunning(t)
}
