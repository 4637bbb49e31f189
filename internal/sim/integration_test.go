package sim_test

// Integration tests: picosim's devices (the real device package, and the
// firmware emulation) against the real picogate binary and a real control
// plane with kube-scheduler and kube-controller-manager, all on loopback.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/picogate/picogate/device"
	"github.com/picogate/picogate/internal/controlplane"
	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
	"github.com/picogate/picogate/internal/gatewaytest"
	"github.com/picogate/picogate/internal/sim"
)

type env struct {
	cp *controlplane.ControlPlane
	cs kubernetes.Interface
	gw *gatewaytest.Gateway
}

func setup(t *testing.T) *env {
	t.Helper()
	cp := controlplanetest.Start(t, controlplane.Config{Scheduler: true, ControllerManager: true})
	cs := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	seedFleetConfig(t, cs)
	gw := gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: cp.AdminKubeconfig()})
	return &env{cp: cp, cs: cs, gw: gw}
}

// seedFleetConfig creates the reference firmware's ConfigMap and the Role that lets the device group
// read it (the harness's one copy, controlplanetest.SeedFleet).
func seedFleetConfig(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	must(t, controlplanetest.SeedFleet(context.Background(), cs))
}

func create[T any](_ T, err error) error { return err }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// provision runs `picogate device add ... -o json` and parses its output the
// way picosim does.
func (e *env) provision(t *testing.T, args ...string) []sim.Credential {
	t.Helper()
	cmd := exec.Command(gatewaytest.Binary(t, "picogate"), append(append([]string{"device", "add", "-o", "json"}, args...), "--kubeconfig", e.cp.AdminKubeconfig())...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("picogate device add %v: %v", args, err)
	}
	creds, err := sim.ParseCredentials(out)
	if err != nil {
		t.Fatalf("parsing device add output: %v", err)
	}
	return creds
}

// fleet runs a simulator until stop is called; stop returns its report.
// The devices' log is shown if the test fails.
func fleet(t *testing.T, cfg sim.Config) (stop func() *sim.Report) {
	t.Helper()
	var logMu sync.Mutex
	var logBuf bytes.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logBuf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			logMu.Lock()
			t.Logf("device log:\n%s", logBuf.String())
			logMu.Unlock()
		}
	})
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var rep *sim.Report
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var err error
		if rep, err = s.Run(ctx); err != nil {
			t.Errorf("simulator: %v", err)
		}
	}()
	var once sync.Once
	stop = func() *sim.Report {
		once.Do(func() { cancel(); wg.Wait() })
		return rep
	}
	t.Cleanup(func() { stop() })
	return stop
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

func nodeReady(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return ""
}

func (e *env) waitNodeReady(t *testing.T, name string, want corev1.ConditionStatus, timeout time.Duration) *corev1.Node {
	t.Helper()
	var node *corev1.Node
	eventually(t, timeout, fmt.Sprintf("node %s Ready=%s", name, want), func() error {
		var err error
		node, err = e.cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got := nodeReady(node); got != want {
			return fmt.Errorf("got Ready=%q", got)
		}
		return nil
	})
	return node
}

func (e *env) lease(t *testing.T, name string) *coordv1.Lease {
	t.Helper()
	l, err := e.cs.CoordinationV1().Leases("kube-node-lease").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("lease %s: %v", name, err)
	}
	return l
}

func TestAgentFleetThroughGateway(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	creds := e.provision(t, "--count", "2", "--prefix", "pico-")
	ipCred := e.provision(t, "pico-ip", "--auth", "ip", "--ip", "127.0.0.31")
	all := append(creds, ipCred...)
	gatewayURL := "http://" + e.gw.Addr

	// pico-ip runs in its own simulator so the test can stop it alone.
	stopMain := fleet(t, sim.Config{Gateway: gatewayURL, Credentials: all[:2], Jitter: true, StartSpread: time.Second})
	stopIP := fleet(t, sim.Config{Gateway: gatewayURL, Credentials: all[2:]})

	for _, c := range all {
		node := e.waitNodeReady(t, c.Name, corev1.ConditionTrue, 30*time.Second)
		t.Run("node "+c.Name, func(t *testing.T) { checkNode(t, node) })
	}
	t.Run("lease", func(t *testing.T) {
		node, _ := e.cs.CoreV1().Nodes().Get(ctx, "pico-1", metav1.GetOptions{})
		l := e.lease(t, "pico-1")
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != "pico-1" || l.Spec.LeaseDurationSeconds == nil || *l.Spec.LeaseDurationSeconds != 40 {
			t.Errorf("got holder %v duration %v, want pico-1 40", l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds)
		}
		if len(l.OwnerReferences) != 1 || l.OwnerReferences[0].Kind != "Node" || l.OwnerReferences[0].UID != node.UID {
			t.Errorf("got owner references %+v, want the Node with uid %s", l.OwnerReferences, node.UID)
		}
		first := l.Spec.RenewTime.Time
		eventually(t, 15*time.Second, "lease renewed", func() error {
			if r := e.lease(t, "pico-1").Spec.RenewTime.Time; !r.After(first) {
				return fmt.Errorf("renewTime still %s", r)
			}
			return nil
		})
	})

	t.Run("deployment runs on the devices", func(t *testing.T) { e.checkDeployment(t) })
	t.Run("pod outcomes", func(t *testing.T) { e.checkPodOutcomes(t) })
	t.Run("pod deletion completed", func(t *testing.T) { e.checkDeletion(t) })

	t.Run("gateway restart", func(t *testing.T) {
		e.gw.Stop()
		time.Sleep(2 * time.Second)
		if err := e.gw.Start(); err != nil {
			t.Fatal(err)
		}
		restarted := time.Now()
		eventually(t, 30*time.Second, "lease renewed after the gateway restart", func() error {
			if r := e.lease(t, "pico-2").Spec.RenewTime.Time; r.Before(restarted) {
				return fmt.Errorf("renewTime %s is before the restart", r)
			}
			return nil
		})
		// The pod watch reconnected: a new pod is run.
		p := e.createPod(t, "after-restart", "pico-2", device.SensorImage, corev1.RestartPolicyAlways)
		e.waitPodPhase(t, p.Name, corev1.PodRunning, 30*time.Second)
	})

	t.Run("stopped device becomes NotReady", func(t *testing.T) {
		stopIP()
		e.waitNodeReady(t, "pico-ip", corev1.ConditionUnknown, 90*time.Second)
		if got := nodeReady(e.waitNodeReady(t, "pico-1", corev1.ConditionTrue, time.Second)); got != corev1.ConditionTrue {
			t.Errorf("pico-1: got Ready=%s, want True", got)
		}
	})

	rep := stopMain()
	if rep == nil {
		t.Fatal("no report")
	}
	if rep.LeaseRenewalsLate != 0 {
		t.Errorf("lease renewals late: got %d, want 0 (the gateway was down ~2 s, within one interval)", rep.LeaseRenewalsLate)
	}
	if rep.LeaseRenewals == 0 || rep.Requests == 0 {
		t.Errorf("got %d renewals in %d requests, want some", rep.LeaseRenewals, rep.Requests)
	}
	for k, v := range rep.Errors {
		if k != "network" && !strings.HasPrefix(k, "http-5") {
			t.Errorf("errors: got %d of kind %s, want only network/5xx errors (from the gateway restart)", v, k)
		}
	}
}

func checkNode(t *testing.T, n *corev1.Node) {
	wantLabels := map[string]string{
		"kubernetes.io/arch": "arm", "kubernetes.io/os": "linux", "kubernetes.io/hostname": n.Name,
		"node.kubernetes.io/instance-type": "rp2040-pico", "picogate.io/board": "rp2040",
	}
	for k, v := range wantLabels {
		if n.Labels[k] != v {
			t.Errorf("label %s: got %q, want %q", k, n.Labels[k], v)
		}
	}
	// The node lifecycle controller may briefly add its own not-ready taint.
	found := false
	for _, tn := range n.Spec.Taints {
		found = found || (tn.Key == "picogate.io/mcu" && tn.Value == "true" && tn.Effect == corev1.TaintEffectNoSchedule)
	}
	if !found {
		t.Errorf("taints: got %+v, want picogate.io/mcu=true:NoSchedule among them", n.Spec.Taints)
	}
	if got := n.Status.Capacity.Memory().String(); got != "264Ki" {
		t.Errorf("memory capacity: got %s, want 264Ki", got)
	}
	if got := n.Status.Capacity.Pods().Value(); got != 4 {
		t.Errorf("pods capacity: got %d, want 4", got)
	}
	var ip string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ip = a.Address
		}
	}
	if !strings.HasPrefix(ip, "127.") {
		t.Errorf("InternalIP: got %q, want a loopback address", ip)
	}
	if n.Name == "pico-ip" && ip != "127.0.0.31" {
		t.Errorf("InternalIP of the ip-mode device: got %q, want 127.0.0.31", ip)
	}
}

func (e *env) checkDeployment(t *testing.T) {
	ctx := context.Background()
	replicas := int32(2)
	labels := map[string]string{"app": "blink"}
	_, err := e.cs.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "blink"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"picogate.io/board": "rp2040"},
					Tolerations:  []corev1.Toleration{{Key: "picogate.io/mcu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
					Containers:   []corev1.Container{{Name: "blink", Image: device.BlinkImage, Args: []string{"--period=500ms"}}},
				},
			},
		},
	}, metav1.CreateOptions{})
	must(t, err)
	eventually(t, 60*time.Second, "2 blink pods Running and Ready", func() error {
		pods, err := e.cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=blink"})
		if err != nil {
			return err
		}
		ready := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && podCondition(&p, corev1.PodReady) == corev1.ConditionTrue {
				ready++
			}
		}
		if ready != 2 {
			return fmt.Errorf("%d of %d pods running and ready", ready, len(pods.Items))
		}
		return nil
	})
	pods, _ := e.cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=blink"})
	for _, p := range pods.Items {
		node, err := e.cs.CoreV1().Nodes().Get(ctx, p.Spec.NodeName, metav1.GetOptions{})
		must(t, err)
		var ip string
		for _, a := range node.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ip = a.Address
			}
		}
		if p.Status.PodIP != ip || p.Status.HostIP != ip {
			t.Errorf("pod %s: got podIP %q hostIP %q, want the node's InternalIP %q", p.Name, p.Status.PodIP, p.Status.HostIP, ip)
		}
		if len(p.Status.ContainerStatuses) != 1 {
			t.Fatalf("pod %s: got %d container statuses, want 1", p.Name, len(p.Status.ContainerStatuses))
		}
		cs := p.Status.ContainerStatuses[0]
		if !cs.Ready || cs.Started == nil || !*cs.Started || cs.State.Running == nil || cs.RestartCount != 0 ||
			!strings.HasPrefix(cs.ContainerID, "picogate://") || cs.Image != device.BlinkImage || cs.ImageID == "" {
			t.Errorf("pod %s container status: got %+v", p.Name, cs)
		}
		for _, ct := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
			if got := podCondition(&p, ct); got != corev1.ConditionTrue {
				t.Errorf("pod %s condition %s: got %q, want True", p.Name, ct, got)
			}
		}
	}
}

func podCondition(p *corev1.Pod, ct corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == ct {
			return c.Status
		}
	}
	return ""
}

func (e *env) createPod(t *testing.T, name, node, image string, policy corev1.RestartPolicy, args ...string) *corev1.Pod {
	t.Helper()
	p, err := e.cs.CoreV1().Pods("default").Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName:      node,
			RestartPolicy: policy,
			Tolerations:   []corev1.Toleration{{Key: "picogate.io/mcu", Operator: corev1.TolerationOpExists}},
			Containers:    []corev1.Container{{Name: "app", Image: image, Args: args}},
		},
	}, metav1.CreateOptions{})
	must(t, err)
	return p
}

func (e *env) waitPodPhase(t *testing.T, name string, phase corev1.PodPhase, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	eventually(t, timeout, fmt.Sprintf("pod %s %s", name, phase), func() error {
		var err error
		if p, err = e.cs.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{}); err != nil {
			return err
		}
		if p.Status.Phase != phase {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	})
	return p
}

func (e *env) checkPodOutcomes(t *testing.T) {
	e.createPod(t, "completes", "pico-1", device.SensorImage, corev1.RestartPolicyNever, "--period=200ms", "--count=2")
	e.createPod(t, "fails", "pico-2", device.BlinkImage, corev1.RestartPolicyNever, "--period=200ms", "--fail-after=1")
	e.createPod(t, "unknown-image", "pico-1", "nginx:1.27", corev1.RestartPolicyAlways)

	p := e.waitPodPhase(t, "completes", corev1.PodSucceeded, 30*time.Second)
	if term := p.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 0 || term.Reason != "Completed" {
		t.Errorf("completes: got state %+v, want terminated Completed exit 0", p.Status.ContainerStatuses[0].State)
	}
	p = e.waitPodPhase(t, "fails", corev1.PodFailed, 30*time.Second)
	if term := p.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 1 || term.Reason != "Error" || !strings.Contains(term.Message, "failing after 1 ticks") {
		t.Errorf("fails: got state %+v, want terminated Error exit 1 with the app's message", p.Status.ContainerStatuses[0].State)
	}
	eventually(t, 30*time.Second, "unknown image waits with ImageNotBuiltIn", func() error {
		p, err := e.cs.CoreV1().Pods("default").Get(context.Background(), "unknown-image", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Waiting == nil {
			return fmt.Errorf("status %+v", p.Status)
		}
		w := p.Status.ContainerStatuses[0].State.Waiting
		if p.Status.Phase != corev1.PodPending || w.Reason != "ImageNotBuiltIn" || !strings.Contains(w.Message, device.BlinkImage) {
			return fmt.Errorf("phase %s waiting %+v", p.Status.Phase, w)
		}
		return nil
	})
}

func (e *env) checkDeletion(t *testing.T) {
	ctx := context.Background()
	e.createPod(t, "doomed", "pico-2", device.BlinkImage, corev1.RestartPolicyAlways, "--period=100ms")
	e.waitPodPhase(t, "doomed", corev1.PodRunning, 30*time.Second)
	must(t, e.cs.CoreV1().Pods("default").Delete(ctx, "doomed", metav1.DeleteOptions{}))
	// The default 30 s grace period would keep a kubelet-less pod
	// Terminating until someone force-deletes it; the device completes it.
	eventually(t, 20*time.Second, "deleted pod removed by its device", func() error {
		_, err := e.cs.CoreV1().Pods("default").Get(ctx, "doomed", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
	for _, name := range []string{"completes", "fails", "unknown-image"} {
		must(t, e.cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{}))
	}
	eventually(t, 20*time.Second, "finished and waiting pods removed by their devices", func() error {
		pods, err := e.cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			switch p.Name {
			case "completes", "fails", "unknown-image":
				return fmt.Errorf("pod %s still there", p.Name)
			}
		}
		return nil
	})
}

func TestFirmwareModeThroughGateway(t *testing.T) {
	e := setup(t)
	creds := append(e.provision(t, "fw-token"), e.provision(t, "fw-ip", "--auth", "ip", "--ip", "127.0.0.41")...)
	stop := fleet(t, sim.Config{
		Gateway: "http://" + e.gw.Addr, Credentials: creds, Mode: sim.ModeFirmware,
		FirmwareStatusInterval: 500 * time.Millisecond, FirmwareConfigInterval: time.Second,
	})
	for _, c := range creds {
		e.waitNodeReady(t, c.Name, corev1.ConditionTrue, 30*time.Second)
	}
	time.Sleep(3 * time.Second)
	rep := stop()
	if rep.OversizeResponses != 0 || rep.ChunkedResponses != 0 {
		t.Errorf("got %d oversize and %d chunked responses, want 0 and 0 (largest %d bytes)", rep.OversizeResponses, rep.ChunkedResponses, rep.MaxResponseBytes)
	}
	if len(rep.Errors) != 0 {
		t.Errorf("errors: got %v, want none", rep.Errors)
	}
	for _, d := range rep.PerDevice {
		if d.StatusPatches < 3 {
			t.Errorf("%s: got %d accepted status updates, want at least 3", d.Name, d.StatusPatches)
		}
		if d.ConfigValues != "[7,8,9]" {
			t.Errorf("%s: got memory_values %q, want [7,8,9]", d.Name, d.ConfigValues)
		}
	}
}
