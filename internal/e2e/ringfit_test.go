package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/picogate/picogate/internal/controlplane"
	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
	"github.com/picogate/picogate/internal/gatewaytest"
)

// ringBytes is what the reference firmware keeps of an answer, status line and headers included: its
// TCP layer's 2,048-byte ring, one byte of which is never used.
const ringBytes = 2047

// ringGrace is kube-controller-manager's --node-monitor-grace-period here: 10 s instead of k3s's 50 s,
// so the outage that makes the node lifecycle controller write its messages and taints takes seconds.
const ringGrace = 10 * time.Second

// ringMemoryValues is the 800-byte data.memory_values of the ConfigMap written with kubectl apply.
var ringMemoryValues = strings.Repeat("1234567,", 100)

// checkRing fails t unless the answer is whole within the ring: at most ringBytes with its headers,
// a Content-Length equal to the body, no chunked framing, valid JSON, a Date to set the clock from.
func checkRing(t *testing.T, what string, r firmwareResponse) {
	t.Helper()
	if r.overflow || len(r.raw) > ringBytes {
		t.Errorf("%s: got %d bytes with headers, want at most %d (the firmware's receive ring)", what, len(r.raw), ringBytes)
	}
	if r.headers["transfer-encoding"] != "" {
		t.Errorf("%s: got Transfer-Encoding %q, want none", what, r.headers["transfer-encoding"])
	}
	if cl, err := strconv.Atoi(r.headers["content-length"]); err != nil || cl != len(r.body) {
		t.Errorf("%s: got Content-Length %q for a %d-byte body, want them equal", what, r.headers["content-length"], len(r.body))
	}
	if !json.Valid([]byte(r.body)) {
		t.Errorf("%s: got a body that is not whole JSON: %.200s", what, r.body)
	}
	if r.headers["date"] == "" {
		t.Errorf("%s: got no Date, want one (the firmware sets its clock from it)", what)
	}
	t.Logf("%s: %d bytes with headers (%d spare)", what, len(r.raw), ringBytes-len(r.raw))
}

// ringHeartbeat is the firmware's status PATCH with the message it sets on Ready (it sets none on the
// other conditions, so the controller's "Kubelet stopped posting node status." stays on them).
func ringHeartbeat(ip string) string {
	return strings.Replace(firmwareHeartbeat(ip), `"reason":"KubeletReady"`, `"reason":"KubeletReady","message":"kubelet is posting ready status"`, 1)
}

// ringCluster is a control plane of its own: kube-controller-manager runs (the node lifecycle controller
// is what writes the outage into a Node), and pico-config is written with kubectl apply.
func ringCluster(t *testing.T) (*controlplane.ControlPlane, kubernetes.Interface) {
	t.Helper()
	cp := controlplanetest.Start(t, controlplane.Config{ControllerManager: true, NodeMonitorGracePeriod: ringGrace})
	cs := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	ctx := context.Background()
	if err := controlplanetest.SeedFleet(ctx, cs); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().ConfigMaps("default").Delete(ctx, "pico-config", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(t.TempDir(), "pico-config.yaml")
	if err := os.WriteFile(manifest, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pico-config\n  namespace: default\ndata:\n  memory_values: \""+ringMemoryValues+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(kubectlBinary(t), "apply", "-f", manifest, "--kubeconfig", cp.AdminKubeconfig()).CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v: %s", err, out)
	}
	cm, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "pico-config", metav1.GetOptions{})
	if err != nil || !strings.Contains(cm.Annotations["kubectl.kubernetes.io/last-applied-configuration"], ringMemoryValues) {
		t.Fatalf("got %v (%v), want pico-config with kubectl's last-applied annotation repeating the data", cm.Annotations, err)
	}
	return cp, cs
}

func ringDevice(t *testing.T, cp *controlplane.ControlPlane, name string) string {
	t.Helper()
	out, err := exec.Command(gatewaytest.Binary(t, "picogate"), "device", "add", name, "-o", "json", "--kubeconfig", cp.AdminKubeconfig()).Output()
	if err != nil {
		t.Fatalf("picogate device add %s: %v", name, err)
	}
	var cred credential
	if err := json.Unmarshal(out, &cred); err != nil {
		t.Fatal(err)
	}
	return "Authorization: Bearer " + cred.Token
}

// TestFirmwareAfterOutageFitsRing: the reference firmware's requests after an outage — the node
// lifecycle controller has marked its Node Unknown, written "Kubelet stopped posting node status." into
// its conditions and tainted it — get answers of at most 2,047 bytes with headers, with heartbeat
// translation on (the default) and off. The control shows what it was before: the same heartbeat
// answered with the API server's whole Node overflows the ring.
func TestFirmwareAfterOutageFitsRing(t *testing.T) {
	cp, cs := ringCluster(t)
	grace := []string{"--node-monitor-grace-period", ringGrace.String()}
	gateways := []struct {
		name    string
		args    []string
		control bool // the answer is not fitted: it must overflow, or the test shows nothing
	}{
		{"heartbeat translation", nil, false},
		{"forwarded heartbeats", []string{"--heartbeat-translation=false"}, false},
		{"control: nothing fitted", []string{"--heartbeat-translation=false", "--ring-user-agents="}, true},
	}
	for i, g := range gateways {
		t.Run(g.name, func(t *testing.T) {
			gw := gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: cp.AdminKubeconfig(), Args: append(grace, g.args...)})
			name := "ring-pico-" + strconv.Itoa(i)
			auth := ringDevice(t, cp, name)
			var r firmwareResponse
			gatewaytest.WaitFor(context.Background(), 10*time.Second, func() bool {
				r = firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, name, "127.0.0.1"), auth)
				return r.code != 401
			})
			if r.code != 201 {
				t.Fatalf("POST node: got %d %s, want 201", r.code, r.body)
			}
			if !g.control {
				checkRing(t, "POST node at boot", r)
			}
			r = firmwareDo(t, gw.Addr, "", "PATCH", "/api/v1/nodes/"+name+"/status", "application/strategic-merge-patch+json", ringHeartbeat("127.0.0.1"), auth)
			if r.code != 200 {
				t.Fatalf("first heartbeat: got %d %s", r.code, r.body)
			}
			if !g.control {
				checkRing(t, "heartbeat before the outage", r)
			}

			// The outage: no heartbeat until the controller has written it into the Node.
			var n *corev1.Node
			if !gatewaytest.WaitFor(context.Background(), 3*ringGrace+30*time.Second, func() bool {
				var err error
				n, err = cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
				return err == nil && condition(n, corev1.NodeReady).Status == corev1.ConditionUnknown && len(n.Spec.Taints) > 0
			}) {
				t.Fatalf("node %s never marked Unknown and tainted: %+v", name, n.Spec.Taints)
			}

			r = firmwareDo(t, gw.Addr, "", "PATCH", "/api/v1/nodes/"+name+"/status", "application/strategic-merge-patch+json", ringHeartbeat("127.0.0.1"), auth)
			if r.code != 200 {
				t.Fatalf("heartbeat after the outage: got %d %s, want 200", r.code, r.body)
			}
			if g.control {
				if len(r.raw) <= ringBytes {
					t.Fatalf("control: got %d bytes for the whole Node after the outage, want more than %d (else this test proves nothing)", len(r.raw), ringBytes)
				}
				t.Logf("control: the API server's Node after the outage is %d bytes with headers, %d over the ring", len(r.raw), len(r.raw)-ringBytes)
				return
			}
			checkRing(t, "heartbeat after the outage", r)
			if !strings.Contains(r.body, `"uid"`) || !strings.Contains(r.body, name) {
				t.Errorf("heartbeat after the outage: got %s, want the Node named, with its uid", r.body)
			}
			r = firmwareDo(t, gw.Addr, "", "PATCH", "/api/v1/nodes/"+name+"/status", "application/strategic-merge-patch+json", ringHeartbeat("127.0.0.1"), auth)
			if r.code != 200 {
				t.Fatalf("second heartbeat: got %d %s", r.code, r.body)
			}
			checkRing(t, "second heartbeat", r)
			r = firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, name, "127.0.0.1"), auth)
			if r.code != 409 {
				t.Fatalf("POST node at reboot: got %d %s, want 409", r.code, r.body)
			}
			checkRing(t, "POST node at reboot (409)", r)
			r = firmwareDo(t, gw.Addr, "", "GET", "/api/v1/namespaces/default/configmaps/pico-config", "", "", auth)
			if r.code != 200 {
				t.Fatalf("GET configmap: got %d %s", r.code, r.body)
			}
			checkRing(t, "GET configmap", r)
		})
	}
}

// TestKubectlAppliedConfigMapFitsRing: a ConfigMap written with kubectl apply, whose 800-byte value
// kubectl also keeps in its last-applied annotation, reaches the firmware with its data whole within
// 2,047 bytes. Before, the answer was about 2,200 bytes: the ring kept the first 2,047, the data was cut
// off and the firmware never found memory_values.
func TestKubectlAppliedConfigMapFitsRing(t *testing.T) {
	cp, _ := ringCluster(t)
	for i, g := range []struct {
		name    string
		args    []string
		control bool // nothing dropped: it must overflow, or the test shows nothing
	}{
		{"read cache on (the default)", nil, false},
		{"read cache off", []string{"--read-cache=false"}, false},
		{"control: uncompacted, the annotation kept", []string{"--read-cache=false", "--compact=false"}, true},
	} {
		t.Run(g.name, func(t *testing.T) {
			gw := gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: cp.AdminKubeconfig(), Args: g.args})
			auth := ringDevice(t, cp, "cm-pico-"+strconv.Itoa(i))
			if g.control {
				r := firmwareDo(t, gw.Addr, "", "GET", "/api/v1/namespaces/default/configmaps/pico-config", "", "", auth)
				for r.code == 401 {
					r = firmwareDo(t, gw.Addr, "", "GET", "/api/v1/namespaces/default/configmaps/pico-config", "", "", auth)
				}
				if r.code != 200 || len(r.raw) <= ringBytes || !strings.Contains(r.body, "last-applied-configuration") {
					t.Fatalf("control: got %d, %d bytes, want 200 over %d bytes with the annotation (else this test proves nothing)", r.code, len(r.raw), ringBytes)
				}
				t.Logf("control: the ConfigMap as the API server answers it is %d bytes with headers", len(r.raw))
				return
			}
			for i := range 2 { // the second may come from the gateway's memory
				var r firmwareResponse
				gatewaytest.WaitFor(context.Background(), 10*time.Second, func() bool {
					r = firmwareDo(t, gw.Addr, "", "GET", "/api/v1/namespaces/default/configmaps/pico-config", "", "", auth)
					return r.code != 401
				})
				if r.code != 200 {
					t.Fatalf("GET configmap %d: got %d %s, want 200", i, r.code, r.body)
				}
				checkRing(t, "GET kubectl-applied configmap", r)
				// What the firmware does with the first 2,047 bytes: find the field, read the string.
				kept := string(r.raw[:min(len(r.raw), ringBytes)])
				_, after, ok := strings.Cut(kept, `"memory_values":"`)
				value, _, closed := strings.Cut(after, `"`)
				if !ok || !closed || value != ringMemoryValues {
					t.Errorf("GET configmap %d: got memory_values %q (found %v, whole %v), want the 800 bytes applied", i, value, ok, closed)
				}
				if strings.Contains(r.body, "last-applied-configuration") {
					t.Errorf("GET configmap %d: got kubectl's last-applied annotation, want it dropped", i)
				}
			}
		})
	}
}
