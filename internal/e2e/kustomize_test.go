package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/picogate/picogate/deploy"
	"github.com/picogate/picogate/internal/registry"
	"github.com/picogate/picogate/internal/setup"
)

// repoRoot is the module root (tests run in internal/e2e).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod in %s", root)
	}
	return root
}

// kubectlBinary is the kubectl `make controlplane` built beside the control plane: $PICOGATE_BIN, else
// ./bin. It is no command of this module, so gatewaytest.Binary cannot build it.
func kubectlBinary(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("PICOGATE_BIN")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), "bin")
	}
	p := filepath.Join(dir, "kubectl")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("kubectl: %v (make controlplane builds it)", err)
	}
	return p
}

// kubectl runs the kubectl built into ./bin with stdin and returns its stdout, stderr and error.
func kubectl(t testing.TB, stdin string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(kubectlBinary(t), args...)
	cmd.Dir = repoRoot(t)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return o.String(), e.String(), err
}

// render runs `kubectl kustomize DIR` and decodes the objects, keyed "Kind name".
func render(t testing.TB, dir string) (string, map[string]*unstructured.Unstructured) {
	t.Helper()
	out, stderr, err := kubectl(t, "", "kustomize", dir)
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v: %s", dir, err, stderr)
	}
	objs, err := setup.DecodeManifest([]byte(out))
	if err != nil {
		t.Fatalf("kubectl kustomize %s output: %v", dir, err)
	}
	byName := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		byName[o.GetKind()+" "+o.GetName()] = o
	}
	return out, byName
}

func typed[T any](t testing.TB, o *unstructured.Unstructured) *T {
	t.Helper()
	if o == nil {
		t.Fatalf("object not rendered")
	}
	v := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, v, true); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
	return v
}

// dryRunApply server-side applies a manifest with --dry-run=server as the admin: the API server
// validates every object (strict field validation, defaulting, admission) and stores nothing.
func dryRunApply(t testing.TB, manifest string) (string, error) {
	t.Helper()
	out, stderr, err := kubectl(t, manifest, "apply", "--server-side", "--dry-run=server", "--field-manager=picogate-test", "--kubeconfig", cluster(t).AdminKubeconfig(), "-f", "-")
	return out + stderr, err
}

// ensureRegistryNamespace creates picogate-system when no earlier test did: a server dry run creates
// nothing, so namespaced objects in a Namespace of the same manifest would otherwise be refused.
func ensureRegistryNamespace(t testing.TB) {
	t.Helper()
	_, err := admin(cluster(t)).CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: registry.DefaultNamespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// TestKustomizeBaseRendersAndApplies renders deploy/kubernetes/base, checks what the issue asks of each
// object, and has the test API server accept it in a server-side dry run.
func TestKustomizeBaseRendersAndApplies(t *testing.T) {
	manifest, objs := render(t, "deploy/kubernetes/base")
	var kinds []string
	for k := range objs {
		kinds = append(kinds, strings.Fields(k)[0])
	}
	slices.Sort(kinds)
	want := []string{"ClusterRole", "ClusterRoleBinding", "Deployment", "Namespace", "NetworkPolicy", "PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("rendered kinds: got %v, want %v", kinds, want)
	}

	t.Run("RBAC is deploy/rbac.yaml", func(t *testing.T) {
		src, err := setup.DecodeManifest(deploy.RBAC())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range src {
			got := objs[o.GetKind()+" "+o.GetName()]
			if got == nil || !reflect.DeepEqual(got.Object, o.Object) {
				t.Errorf("%s %s: rendered %v, want deploy/rbac.yaml's %v", o.GetKind(), o.GetName(), got, o.Object)
			}
		}
	})

	d := typed[appsv1.Deployment](t, objs["Deployment picogate"])
	svc := typed[corev1.Service](t, objs["Service picogate"])
	pdb := typed[policyv1.PodDisruptionBudget](t, objs["PodDisruptionBudget picogate"])
	checkDeployment(t, d)
	checkService(t, svc, d, corev1.ServiceTypeLoadBalancer)
	checkNetworkPolicy(t, typed[networkingv1.NetworkPolicy](t, objs["NetworkPolicy picogate"]), d)
	t.Run("PodDisruptionBudget", func(t *testing.T) {
		if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
			t.Errorf("minAvailable: got %v, want 1", pdb.Spec.MinAvailable)
		}
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("selector %v: want it to match the gateway pods %v", pdb.Spec.Selector, d.Spec.Template.Labels)
		}
	})

	t.Run("server-side dry run", func(t *testing.T) {
		ensureRegistryNamespace(t)
		out, err := dryRunApply(t, manifest)
		if err != nil {
			t.Fatalf("kubectl apply --server-side --dry-run=server: %v: %s", err, out)
		}
		for k := range objs {
			name := strings.Fields(k)[1]
			if !strings.Contains(out, "/"+name+" serverside-applied (server dry run)") {
				t.Errorf("dry run output: got %q, want %s applied", out, k)
			}
		}
		if _, err := admin(cluster(t)).AppsV1().Deployments("picogate-system").Get(context.Background(), "picogate", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("after a dry run: got %v, want no Deployment stored", err)
		}
	})

	// The dry run has teeth: a misspelt field is refused by the API server's strict validation.
	t.Run("dry run refuses a typo", func(t *testing.T) {
		bad := strings.Replace(manifest, "readOnlyRootFilesystem", "readOnlyRootFileSystem", 1)
		out, err := dryRunApply(t, bad)
		if err == nil || !strings.Contains(out, "readOnlyRootFileSystem") {
			t.Errorf("got %v: %q, want the unknown field refused", err, out)
		}
	})
}

// TestKustomizeNodePortOverlay: the overlay changes the Service to a NodePort and nothing else.
func TestKustomizeNodePortOverlay(t *testing.T) {
	manifest, objs := render(t, "deploy/kubernetes/overlays/nodeport")
	_, base := render(t, "deploy/kubernetes/base")
	if len(objs) != len(base) {
		t.Fatalf("got %d objects, want the base's %d", len(objs), len(base))
	}
	for k, o := range base {
		if k != "Service picogate" && !reflect.DeepEqual(objs[k].Object, o.Object) {
			t.Errorf("%s differs from the base", k)
		}
	}
	svc := typed[corev1.Service](t, objs["Service picogate"])
	checkService(t, svc, typed[appsv1.Deployment](t, objs["Deployment picogate"]), corev1.ServiceTypeNodePort)
	if p := svc.Spec.Ports[0].NodePort; p < 30000 || p > 32767 {
		t.Errorf("nodePort: got %d, want one in the default range 30000-32767", p)
	}
	ensureRegistryNamespace(t)
	if out, err := dryRunApply(t, manifest); err != nil {
		t.Fatalf("server-side dry run: %v: %s", err, out)
	}
}

func checkDeployment(t *testing.T, d *appsv1.Deployment) {
	t.Run("Deployment", func(t *testing.T) {
		spec := d.Spec.Template.Spec
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
			t.Errorf("replicas: got %v, want 2", d.Spec.Replicas)
		}
		if spec.ServiceAccountName != "picogate" || spec.AutomountServiceAccountToken == nil || !*spec.AutomountServiceAccountToken {
			t.Errorf("service account: got %q automount %v, want picogate with its token mounted", spec.ServiceAccountName, spec.AutomountServiceAccountToken)
		}
		if len(spec.TopologySpreadConstraints) == 0 || spec.TopologySpreadConstraints[0].TopologyKey != "kubernetes.io/hostname" {
			t.Errorf("topologySpreadConstraints: got %+v, want a spread over kubernetes.io/hostname", spec.TopologySpreadConstraints)
		}
		psc := spec.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("pod securityContext: got %+v, want runAsNonRoot and seccomp RuntimeDefault", psc)
		}
		if len(spec.Containers) != 1 {
			t.Fatalf("got %d containers, want 1", len(spec.Containers))
		}
		c := spec.Containers[0]
		if !strings.HasPrefix(c.Image, "ghcr.io/picogate/picogate:") {
			t.Errorf("image: got %q, want ghcr.io/picogate/picogate:TAG", c.Image)
		}
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("container securityContext: got %+v, want a read-only root, no privilege escalation, every capability dropped", sc)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if c.Resources.Requests.Name(r, "").IsZero() || c.Resources.Limits.Name(r, "").IsZero() {
				t.Errorf("resources: got %+v, want a request and a limit for %s", c.Resources, r)
			}
		}
		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		if ports["devices"] != 6080 || ports["admin"] != 6081 {
			t.Errorf("ports: got %v, want devices 6080 and admin 6081", ports)
		}
		if !slices.Contains(c.Args, "--admin-listen=:6081") || c.Args[0] != "serve" {
			t.Errorf("args: got %v, want serve with --admin-listen=:6081 (probes come from the node)", c.Args)
		}
		for _, p := range []struct {
			name  string
			probe *corev1.Probe
			path  string
		}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
			if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "admin" {
				t.Errorf("%s probe: got %+v, want GET %s on the admin port", p.name, p.probe, p.path)
			}
		}
		// SIGTERM comes after preStop; the gateway's drain must end before the kubelet's SIGKILL.
		var drain time.Duration
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--shutdown-timeout="); ok {
				drain, _ = time.ParseDuration(v)
			}
		}
		preStop := time.Duration(0)
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
			preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
		grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
		if drain == 0 || preStop+drain >= grace {
			t.Errorf("shutdown: preStop %s + --shutdown-timeout %s, want below terminationGracePeriodSeconds %s", preStop, drain, grace)
		}
	})
}

// checkNetworkPolicy: the gateway pods take device connections from anywhere (the gateway decides who
// may talk), and admin connections only from Prometheus; the kubelet's probes, from the node, are always
// allowed by NetworkPolicy.
func checkNetworkPolicy(t *testing.T, np *networkingv1.NetworkPolicy, d *appsv1.Deployment) {
	t.Run("NetworkPolicy", func(t *testing.T) {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("podSelector %v: want it to match the gateway pods %v", np.Spec.PodSelector, d.Spec.Template.Labels)
		}
		if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
			t.Errorf("policyTypes: got %v, want [Ingress]", np.Spec.PolicyTypes)
		}
		from := map[string][]networkingv1.NetworkPolicyPeer{}
		for _, r := range np.Spec.Ingress {
			for _, p := range r.Ports {
				if p.Port == nil {
					t.Errorf("ingress rule %+v: want every rule to name its port", r)
					continue
				}
				from[p.Port.String()] = append(from[p.Port.String()], r.From...)
				if len(r.From) == 0 {
					from[p.Port.String()] = append(from[p.Port.String()], networkingv1.NetworkPolicyPeer{})
				}
			}
		}
		if len(from) != 2 {
			t.Errorf("ports: got %v, want exactly devices and admin", from)
		}
		if peers := from["devices"]; len(peers) != 1 || peers[0].PodSelector != nil || peers[0].NamespaceSelector != nil || peers[0].IPBlock != nil {
			t.Errorf("devices port: got peers %+v, want it open to every source", peers)
		}
		peers := from["admin"]
		if len(peers) != 1 || peers[0].PodSelector == nil || peers[0].NamespaceSelector == nil || peers[0].IPBlock != nil {
			t.Fatalf("admin port: got peers %+v, want one pod selector (Prometheus) in any namespace", peers)
		}
		prom, _ := metav1.LabelSelectorAsSelector(peers[0].PodSelector)
		if !prom.Matches(labels.Set{"app.kubernetes.io/name": "prometheus"}) || prom.Matches(labels.Set{"app": "anything"}) || prom.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("admin port: got pod selector %v, want Prometheus pods only", peers[0].PodSelector)
		}
		var ports []string
		for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
			ports = append(ports, p.Name)
		}
		for name := range from {
			if !slices.Contains(ports, name) {
				t.Errorf("NetworkPolicy names port %q, which the container does not have (%v)", name, ports)
			}
		}
	})
}

func checkService(t *testing.T, svc *corev1.Service, d *appsv1.Deployment, typ corev1.ServiceType) {
	t.Run("Service", func(t *testing.T) {
		if svc.Spec.Type != typ {
			t.Errorf("type: got %s, want %s", svc.Spec.Type, typ)
		}
		if svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			t.Errorf("externalTrafficPolicy: got %q, want Local (keeps the device's source address)", svc.Spec.ExternalTrafficPolicy)
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 6080 || svc.Spec.Ports[0].TargetPort.String() != "devices" {
			t.Errorf("ports: got %+v, want only 6080 to the devices port (the admin port stays inside)", svc.Spec.Ports)
		}
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) || len(svc.Spec.Selector) == 0 {
			t.Errorf("selector %v: want it to match the gateway pods %v", svc.Spec.Selector, d.Spec.Template.Labels)
		}
	})
}

// TestKustomizeGatewayPodIsRestricted: the gateway's pod passes the Pod Security Standards' "restricted"
// profile, checked by the API server's own PodSecurity admission in a namespace that enforces it.
func TestKustomizeGatewayPodIsRestricted(t *testing.T) {
	_, objs := render(t, "deploy/kubernetes/base")
	d := typed[appsv1.Deployment](t, objs["Deployment picogate"])
	cs := admin(cluster(t))
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "picogate-psa-restricted", Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// No controller manager runs here to create ServiceAccounts; the pod's own is made by hand.
	if _, err := cs.CoreV1().ServiceAccounts(ns.Name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "picogate"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	spec := d.Spec.Template.Spec.DeepCopy()
	dryRun := func(spec *corev1.PodSpec) error {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "picogate-psa", Namespace: ns.Name}, Spec: *spec}
		_, err := cs.CoreV1().Pods(ns.Name).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	}
	if err := dryRun(spec); err != nil {
		t.Errorf("gateway pod in a restricted namespace: got %v, want it admitted", err)
	}
	// The check has teeth: the same pod with its capabilities back is refused.
	spec.Containers[0].SecurityContext.Capabilities = nil
	if err := dryRun(spec); !apierrors.IsForbidden(err) {
		t.Errorf("pod keeping its capabilities: got %v, want 403 from PodSecurity", err)
	}
}
