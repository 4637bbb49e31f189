package controlplane_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"github.com/picogate/picogate/internal/controlplane"
	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
)

func clientset(t *testing.T, cfg *rest.Config) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("building client: %v", err)
	}
	return cs
}

// eventually polls f every 200ms until it returns nil or timeout passes. The timeouts are
// generous bounds for a loaded machine, not speed goals.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestControlPlane(t *testing.T) {
	cp := controlplanetest.Start(t, controlplane.Config{})
	ctx := t.Context()
	admin := clientset(t, cp.AdminConfig())

	t.Run("URL is loopback", func(t *testing.T) {
		if !strings.HasPrefix(cp.URL(), "https://127.0.0.1:") {
			t.Errorf("got URL %q, want https://127.0.0.1:PORT", cp.URL())
		}
	})

	t.Run("admin lists namespaces", func(t *testing.T) {
		list, err := admin.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("listing namespaces: %v", err)
		}
		var names []string
		for _, ns := range list.Items {
			names = append(names, ns.Name)
		}
		for _, want := range []string{"default", "kube-system", "kube-node-lease"} {
			if !slices.Contains(names, want) {
				t.Errorf("got namespaces %v, want %q among them", names, want)
			}
		}
	})

	t.Run("admin kubeconfig names files and works", func(t *testing.T) {
		kc, err := clientcmd.LoadFromFile(cp.AdminKubeconfig())
		if err != nil {
			t.Fatalf("loading %s: %v", cp.AdminKubeconfig(), err)
		}
		user := kc.AuthInfos[kc.Contexts[kc.CurrentContext].AuthInfo]
		if user.ClientCertificate == "" || user.ClientKey == "" || len(user.ClientCertificateData) > 0 || len(user.ClientKeyData) > 0 {
			t.Errorf("got cert %q key %q (inline %d/%d bytes), want file paths only",
				user.ClientCertificate, user.ClientKey, len(user.ClientCertificateData), len(user.ClientKeyData))
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", cp.AdminKubeconfig())
		if err != nil {
			t.Fatalf("building config from %s: %v", cp.AdminKubeconfig(), err)
		}
		if _, err := clientset(t, cfg).CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
			t.Errorf("getting namespace default through the kubeconfig: %v", err)
		}
	})

	t.Run("node identity is judged by Node,RBAC and NodeRestriction", func(t *testing.T) {
		asNode := cp.AdminConfig()
		asNode.Impersonate = rest.ImpersonationConfig{UserName: "system:node:pico-1", Groups: []string{"system:nodes"}}
		node := clientset(t, asNode)
		newNode := func(name string) *corev1.Node { return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}} }
		tests := []struct {
			name      string
			do        func() error
			forbidden bool
			message   string // part of the refusal, naming who refused
		}{
			{"cluster-wide pod list", func() error {
				_, err := node.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
				return err
			}, true, "can only list/watch pods with spec.nodeName field selector"},
			{"own pods", func() error {
				_, err := node.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=pico-1"})
				return err
			}, false, ""},
			{"create own node", func() error {
				_, err := node.CoreV1().Nodes().Create(ctx, newNode("pico-1"), metav1.CreateOptions{})
				return err
			}, false, ""},
			{"create another node", func() error {
				_, err := node.CoreV1().Nodes().Create(ctx, newNode("pico-2"), metav1.CreateOptions{})
				return err
			}, true, `node "pico-1" is not allowed to modify node "pico-2"`},
			{"kube-system secrets", func() error {
				_, err := node.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
				return err
			}, true, ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := tt.do()
				switch {
				case tt.forbidden && !apierrors.IsForbidden(err):
					t.Fatalf("got error %v, want Forbidden", err)
				case !tt.forbidden && err != nil:
					t.Fatalf("got error %v, want none", err)
				case tt.message != "" && !strings.Contains(err.Error(), tt.message):
					t.Errorf("got refusal %q, want it to contain %q", err, tt.message)
				}
			})
		}
	})

	t.Run("issued client certificates authenticate", func(t *testing.T) {
		tests := []struct {
			name, user string
			groups     []string
		}{
			{"device", "system:node:pico-7", []string{"system:nodes", "picogate:devices"}},
			{"plain", "alice", nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				certFile, keyFile, err := cp.IssueClientCert(tt.name, tt.user, tt.groups...)
				if err != nil {
					t.Fatalf("issuing: %v", err)
				}
				if !strings.HasPrefix(certFile, cp.Dir()) || !strings.HasPrefix(keyFile, cp.Dir()) {
					t.Errorf("got files %s, %s, want them under %s", certFile, keyFile, cp.Dir())
				}
				kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
				if err := cp.WriteKubeconfig(kubeconfig, certFile, keyFile); err != nil {
					t.Fatalf("writing kubeconfig: %v", err)
				}
				cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
				if err != nil {
					t.Fatalf("loading kubeconfig: %v", err)
				}
				review, err := clientset(t, cfg).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
				if err != nil {
					t.Fatalf("SelfSubjectReview: %v", err)
				}
				got := review.Status.UserInfo
				if got.Username != tt.user {
					t.Errorf("got user %q, want %q", got.Username, tt.user)
				}
				for _, g := range append(tt.groups, "system:authenticated") {
					if !slices.Contains(got.Groups, g) {
						t.Errorf("got groups %v, want %q among them", got.Groups, g)
					}
				}
			})
		}
	})

	t.Run("bad certificate names are refused", func(t *testing.T) {
		for _, name := range []string{"", "../ca", "a/b", ".hidden"} {
			if _, _, err := cp.IssueClientCert(name, "mallory"); err == nil {
				t.Errorf("IssueClientCert(%q): got no error, want one", name)
			}
		}
	})
}

func TestAPIServerRestart(t *testing.T) {
	cp := controlplanetest.Start(t, controlplane.Config{})
	ctx := t.Context()
	admin := clientset(t, cp.AdminConfig())
	url := cp.URL()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "survives-restart"}}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}

	if err := cp.StopAPIServer(); err != nil {
		t.Fatalf("StopAPIServer: %v", err)
	}
	if _, err := admin.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{}); err == nil {
		t.Fatalf("getting a namespace with the API server stopped: got no error, want one")
	}
	if err := cp.StopAPIServer(); err == nil {
		t.Errorf("second StopAPIServer: got no error, want one")
	}

	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatalf("StartAPIServer: %v", err)
	}
	if cp.URL() != url {
		t.Errorf("got URL %s after restart, want %s", cp.URL(), url)
	}
	if _, err := admin.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("getting namespace after restart with the old client: %v", err)
	}
	if err := cp.StartAPIServer(ctx); err == nil {
		t.Errorf("StartAPIServer while running: got no error, want one")
	}
}

func TestSchedulerAndNodeLifecycle(t *testing.T) {
	cp := controlplanetest.Start(t, controlplane.Config{
		Scheduler:              true,
		ControllerManager:      true,
		NodeMonitorGracePeriod: 10 * time.Second,
	})
	ctx := t.Context()
	admin := clientset(t, cp.AdminConfig())

	createReadyNode(t, admin, "pico-1", map[string]string{"picogate.io/board": "rp2040"},
		[]corev1.Taint{{Key: "picogate.io/mcu", Value: "true", Effect: corev1.TaintEffectNoSchedule}})
	createReadyNode(t, admin, "plain-node", nil, nil) // no board label: must not get the pod

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "blink", Namespace: metav1.NamespaceDefault},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"picogate.io/board": "rp2040"},
			Tolerations: []corev1.Toleration{{
				Key: "picogate.io/mcu", Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectNoSchedule,
			}},
			Containers: []corev1.Container{{Name: "blink", Image: "picogate.io/blink:1"}},
		},
	}
	if _, err := admin.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating pod: %v", err)
	}
	eventually(t, time.Minute, "pod blink bound", func() error {
		got, err := admin.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got.Spec.NodeName == "" {
			return errors.New("not bound yet")
		}
		if got.Spec.NodeName != "pico-1" {
			t.Fatalf("got pod bound to %q, want pico-1", got.Spec.NodeName)
		}
		return nil
	})

	// Nobody renews pico-1's status or Lease: the node lifecycle controller must notice.
	eventually(t, 2*time.Minute, "pico-1 Ready condition Unknown", func() error {
		got, err := admin.CoreV1().Nodes().Get(ctx, "pico-1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range got.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionUnknown {
				return nil
			}
		}
		return errors.New("still not Unknown")
	})
}

// createReadyNode makes a node the way a kubelet would: created, then its status set Ready with
// room for pods (without allocatable pods the scheduler would refuse it).
func createReadyNode(t *testing.T, cs *kubernetes.Clientset, name string, labels map[string]string, taints []corev1.Taint) {
	t.Helper()
	ctx := t.Context()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.NodeSpec{Taints: taints},
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating node %s: %v", name, err)
	}
	resources := corev1.ResourceList{
		corev1.ResourceCPU:    mustQuantity(t, "1"),
		corev1.ResourceMemory: mustQuantity(t, "256Mi"),
		corev1.ResourcePods:   mustQuantity(t, "10"),
	}
	// The node lifecycle controller edits new nodes too (taints, annotations): retry on conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		node.Status.Capacity, node.Status.Allocatable = resources, resources
		node.Status.Conditions = []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: now, LastTransitionTime: now,
		}}
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("setting node %s Ready: %v", name, err)
	}
}

func TestCancelKillsProcesses(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Config{})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer func() { _ = cp.Stop() }() // after the cancel killed the processes: only the folder is left to remove
	hc := &http.Client{Timeout: time.Second}
	cancel()
	eventually(t, 30*time.Second, "API server gone after cancel", func() error {
		resp, err := hc.Get(cp.URL() + "/readyz")
		if err == nil {
			resp.Body.Close()
			return errors.New("still answering")
		}
		return nil
	})
	dir := cp.Dir()
	if err := cp.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Stop, stat %s: got %v, want not exist", dir, err)
	}
}

func TestUpKeepsDirAndData(t *testing.T) {
	dir := t.TempDir()
	const ns = "from-first-run"
	for run, create := range []bool{true, false} {
		ctx, cancel := context.WithCancel(t.Context())
		err := controlplane.Up(ctx, controlplane.Config{Dir: dir}, func(cp *controlplane.ControlPlane) error {
			defer cancel() // one check, then a clean end, as after Ctrl-C
			if cp.AdminKubeconfig() != filepath.Join(dir, "admin.kubeconfig") {
				t.Errorf("got kubeconfig %s, want %s", cp.AdminKubeconfig(), filepath.Join(dir, "admin.kubeconfig"))
			}
			cfg, err := clientcmd.BuildConfigFromFlags("", cp.AdminKubeconfig())
			if err != nil {
				return err
			}
			namespaces := clientset(t, cfg).CoreV1().Namespaces()
			if create {
				_, err = namespaces.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
			} else {
				_, err = namespaces.Get(ctx, ns, metav1.GetOptions{})
			}
			return err
		})
		cancel()
		if err != nil {
			t.Fatalf("run %d: Up: %v", run+1, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "admin.kubeconfig")); err != nil {
			t.Errorf("run %d: after Up, want the kubeconfig kept: %v", run+1, err)
		}
	}
}

func TestMissingBinaries(t *testing.T) {
	dir := t.TempDir()
	_, err := controlplane.Start(t.Context(), controlplane.Config{BinDir: dir, Scheduler: true})
	if !errors.Is(err, controlplane.ErrMissingBinary) {
		t.Fatalf("got error %v, want ErrMissingBinary", err)
	}
	for _, name := range []string{"etcd", "kube-apiserver", "kube-scheduler"} {
		want := name + " not found in " + dir + ": run `make controlplane`"
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got error %q, want it to contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "kube-controller-manager") {
		t.Errorf("got error %q, want no word of kube-controller-manager, which was not asked for", err)
	}
}

func mustQuantity(t *testing.T, s string) resource.Quantity {
	t.Helper()
	q, err := resource.ParseQuantity(s)
	if err != nil {
		t.Fatalf("parsing quantity %q: %v", s, err)
	}
	return q
}

// TestNodeIPAMAndRestart runs the controller manager with node IPAM as k3s does, but with a /22
// cluster CIDR (four /24 node CIDRs) so running out is cheap to show. It also shows why the
// restart matters: a Node naming a pod CIDR outside the cluster CIDR is accepted by the API server,
// and the controller manager exits at its next start.
func TestNodeIPAMAndRestart(t *testing.T) {
	cp := controlplanetest.Start(t, controlplane.Config{ControllerManager: true, NodeIPAM: true, ClusterCIDR: "10.42.0.0/22"})
	ctx := t.Context()
	admin := clientset(t, cp.AdminConfig())
	podCIDR := func(name string) func() error {
		return func() error {
			n, err := admin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if n.Spec.PodCIDR == "" {
				return errors.New("no podCIDR yet")
			}
			if !strings.HasPrefix(n.Spec.PodCIDR, "10.42.") || !strings.HasSuffix(n.Spec.PodCIDR, ".0/24") {
				t.Fatalf("got podCIDR %s for %s, want a /24 of 10.42.0.0/22", n.Spec.PodCIDR, name)
			}
			return nil
		}
	}
	for _, name := range []string{"worker-1", "worker-2"} {
		if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, name+" gets a pod CIDR", podCIDR(name))
	}

	t.Run("restart keeps allocating", func(t *testing.T) {
		if err := cp.StopControllerManager(); err != nil {
			t.Fatal(err)
		}
		if running, _ := cp.Running(controlplane.ControllerManager); running {
			t.Fatal("got the controller manager running after StopControllerManager, want stopped")
		}
		if err := cp.StartControllerManager(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-3"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, "worker-3 gets a pod CIDR after the restart", podCIDR("worker-3"))
		if running, err := cp.Running(controlplane.ControllerManager); !running {
			t.Fatalf("got the controller manager not running: %v", err)
		}
	})

	t.Run("a pod CIDR outside the cluster CIDR stops the next start", func(t *testing.T) {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "outside-1"}, Spec: corev1.NodeSpec{PodCIDR: "192.0.2.1/32", PodCIDRs: []string{"192.0.2.1/32"}}}
		if _, err := admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatalf("got %v, want the API server to accept the Node", err)
		}
		if err := cp.StopControllerManager(); err != nil {
			t.Fatal(err)
		}
		// /healthz may answer before the controllers start: the start fails, or the process exits
		// right after it.
		err := cp.StartControllerManager(ctx)
		if err == nil {
			eventually(t, time.Minute, "the controller manager exits", func() error {
				if running, _ := cp.Running(controlplane.ControllerManager); running {
					return errors.New("still running")
				}
				return nil
			})
			_, err = cp.Running(controlplane.ControllerManager)
		}
		if want := "is out the range of cluster cidr 10.42.0.0/22"; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want an exit whose log says %q", err, want)
		}
	})
}
