// Package e2e tests picogate end to end: the real picogate binary against a real kube-apiserver and
// etcd (../../bin, built by `make controlplane`), over real TCP on loopback.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"

	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/picogate/picogate/internal/controlplane"
	"github.com/picogate/picogate/internal/gatewaytest"
)

// The package shares one control plane: starting one costs seconds and every test uses its own
// device names.
var (
	cpOnce  sync.Once
	cp      *controlplane.ControlPlane
	cpErr   error
	auditFn string
)

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
`

func TestMain(m *testing.M) {
	code := m.Run()
	if cp != nil {
		_ = cp.Stop()
	}
	os.Exit(code)
}

// cluster returns the shared control plane, starting it on first use, with an audit log (so tests can
// count what reached the API server) and the fleet's ConfigMap and its Role.
func cluster(t testing.TB) *controlplane.ControlPlane {
	t.Helper()
	cpOnce.Do(func() {
		dir, err := os.MkdirTemp("", "picogate-e2e-")
		if err != nil {
			cpErr = err
			return
		}
		policy := filepath.Join(dir, "audit-policy.yaml")
		auditFn = filepath.Join(dir, "audit.log")
		if cpErr = os.WriteFile(policy, []byte(auditPolicy), 0o600); cpErr != nil {
			return
		}
		cp, cpErr = controlplane.Start(context.Background(), controlplane.Config{
			APIServerArgs: []string{"--audit-policy-file=" + policy, "--audit-log-path=" + auditFn, "--audit-log-mode=blocking"},
		})
		if cpErr == nil {
			cpErr = seedFleetObjects(admin(cp))
		}
	})
	if cpErr != nil {
		t.Fatalf("control plane: %v", cpErr)
	}
	return cp
}

func admin(c *controlplane.ControlPlane) kubernetes.Interface {
	return kubernetes.NewForConfigOrDie(c.AdminConfig())
}

// seedFleetObjects creates what the reference firmware reads: ConfigMap default/pico-config, readable by
// the group picogate:devices through a plain Role (the Node authorizer alone refuses it).
func seedFleetObjects(cs kubernetes.Interface) error {
	ctx := context.Background()
	// No controller-manager runs here, so the default ServiceAccount the admission plugin wants for
	// pods is created by hand.
	if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "pico-config"},
		Data:       map[string]string{"memory_values": "[1,2,3]"},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := cs.RbacV1().Roles("default").Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "picogate-fleet-config"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"pico-config"}, Verbs: []string{"get"}}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err := cs.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "picogate-fleet-config"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "picogate-fleet-config"},
		Subjects:   []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "picogate:devices"}},
	}, metav1.CreateOptions{})
	return err
}

// picogate runs the CLI and returns stdout; it fails the test on a non-zero exit.
func picogate(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := picogateResult(t, args...)
	if err != nil {
		t.Fatalf("picogate %s: %v: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

func picogateResult(t testing.TB, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(gatewaytest.Binary(t, "picogate"), append(args, "--kubeconfig", cluster(t).AdminKubeconfig())...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// credential is what `picogate device add -o json` prints.
type credential struct {
	Name, Auth, Token, Header, Source string
}

func addDevice(t testing.TB, args ...string) credential {
	t.Helper()
	var c credential
	out := picogate(t, append([]string{"device", "add", "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("device add -o json: %v: %q", err, out)
	}
	return c
}

// startGateway starts picogate serve with the admin kubeconfig.
func startGateway(t testing.TB, args ...string) *gatewaytest.Gateway {
	t.Helper()
	return gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: cluster(t).AdminKubeconfig(), Args: args})
}

// auditedUserAgents returns the user agents of every request the API server audited with an
// impersonated user, i.e. every device request that reached it through a per-device gateway.
func auditedUserAgents(t testing.TB) map[string]int {
	t.Helper()
	f, err := os.Open(auditFn)
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			UserAgent        string `json:"userAgent"`
			ImpersonatedUser *struct {
				Username string `json:"username"`
			} `json:"impersonatedUser"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.ImpersonatedUser != nil {
			out[ev.UserAgent]++
		}
	}
	return out
}

// execPicogate prepares the CLI without the test's kubeconfig.
func execPicogate(t testing.TB, args ...string) *exec.Cmd {
	return exec.Command(gatewaytest.Binary(t, "picogate"), args...)
}
