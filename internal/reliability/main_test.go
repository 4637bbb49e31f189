package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/picogate/picogate/internal/controlplane"
	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
	"github.com/picogate/picogate/internal/gatewaytest"
	"github.com/picogate/picogate/internal/sim"
)

// gatewayUsers are the client-certificate identities the tests give the gateway instead of the admin,
// each granted exactly deploy/rbac.yaml. Only their requests are audited, so the audit log stays small
// under load and says precisely which identity the gateway used.
var gatewayUsers = []string{"picogate-rot-a", "picogate-rot-b", "picogate-reg"}

// wantOpenFiles is what the idle-connection test needs: 10,000 client sockets here, as many in the
// gateway (a child, which inherits the limit), and headroom.
const wantOpenFiles = 12000

// shared is the package's control plane. The tests run one after another, never in parallel (several
// of them kill its API server), and use their own device names.
var shared = &controlplanetest.Shared{
	AuditPolicy: auditPolicy(),
	Setup: func(c *controlplane.ControlPlane) error {
		ctx, cs := context.Background(), admin(c)
		if err := controlplanetest.CreateDefaultServiceAccount(ctx, cs); err != nil {
			return err
		}
		if err := controlplanetest.SeedFleet(ctx, cs); err != nil {
			return err
		}
		return applyGatewayRBAC(cs)
	},
}

func TestMain(m *testing.M) {
	raiseOpenFileLimit(wantOpenFiles)
	shared.Main(m)
}

// raiseOpenFileLimit lifts the soft RLIMIT_NOFILE towards want (never above the hard limit). The test
// needing it checks the result and says what is missing.
func raiseOpenFileLimit(want uint64) {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil || lim.Cur >= want {
		return
	}
	lim.Cur = min(want, lim.Max)
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

func auditPolicy() string {
	return `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  users: ["` + strings.Join(gatewayUsers, `", "`) + `"]
- level: None
`
}

// cluster returns the shared control plane, starting it on first use with an audit log of the gateway
// identities, the fleet's ConfigMap and its Role, and deploy/rbac.yaml applied.
func cluster(t testing.TB) *controlplane.ControlPlane {
	t.Helper()
	return shared.Get(t)
}

func admin(c *controlplane.ControlPlane) kubernetes.Interface {
	return kubernetes.NewForConfigOrDie(c.AdminConfig())
}

// applyGatewayRBAC creates every object of deploy/rbac.yaml, the gateway's documented least privilege,
// so the tests that run the gateway as its own identity prove that file is enough.
func applyGatewayRBAC(cs kubernetes.Interface) error {
	root, err := gatewaytest.ModuleRoot()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy", "rbac.yaml"))
	if err != nil {
		return err
	}
	ctx := context.Background()
	for doc := range strings.SplitSeq(string(b), "\n---\n") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return fmt.Errorf("deploy/rbac.yaml: %w", err)
		}
		var create func() error
		switch meta.Kind {
		case "Namespace":
			var o corev1.Namespace
			create = decodeCreate(doc, &o, func() error { _, err := cs.CoreV1().Namespaces().Create(ctx, &o, metav1.CreateOptions{}); return err })
		case "ServiceAccount":
			var o corev1.ServiceAccount
			create = decodeCreate(doc, &o, func() error {
				_, err := cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
				return err
			})
		case "ClusterRole":
			var o rbacv1.ClusterRole
			create = decodeCreate(doc, &o, func() error { _, err := cs.RbacV1().ClusterRoles().Create(ctx, &o, metav1.CreateOptions{}); return err })
		case "ClusterRoleBinding":
			var o rbacv1.ClusterRoleBinding
			create = decodeCreate(doc, &o, func() error {
				_, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &o, metav1.CreateOptions{})
				return err
			})
		case "Role":
			var o rbacv1.Role
			create = decodeCreate(doc, &o, func() error {
				_, err := cs.RbacV1().Roles(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
				return err
			})
		case "RoleBinding":
			var o rbacv1.RoleBinding
			create = decodeCreate(doc, &o, func() error {
				_, err := cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
				return err
			})
		case "":
			continue
		default:
			return fmt.Errorf("deploy/rbac.yaml: unexpected kind %q", meta.Kind)
		}
		if err := create(); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("deploy/rbac.yaml: creating %s: %w", meta.Kind, err)
		}
	}
	return nil
}

func decodeCreate(doc string, into any, create func() error) func() error {
	return func() error {
		if err := yaml.Unmarshal([]byte(doc), into); err != nil {
			return err
		}
		return create()
	}
}

// The names deploy/rbac.yaml gives the gateway's roles.
const (
	gatewayClusterRole = "picogate-gateway"
	registryRole       = "picogate-registry-reader"
	registryNamespace  = "picogate-system"
)

// gatewayIdentity issues a client certificate for user (one of gatewayUsers), binds it to the roles of
// deploy/rbac.yaml, and writes a kubeconfig naming the certificate and key files. It returns the
// kubeconfig and the certificate file's name, so a test can issue the name again to rotate it.
func gatewayIdentity(t testing.TB, file, user string) (kubeconfig, certName string) {
	t.Helper()
	c := cluster(t)
	certFile, keyFile, err := c.IssueClientCert(file, user)
	if err != nil {
		t.Fatal(err)
	}
	bindGatewayRoles(t, user)
	kubeconfig = filepath.Join(t.TempDir(), file+".kubeconfig")
	if err := c.WriteKubeconfig(kubeconfig, certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	return kubeconfig, file
}

// bindGatewayRoles grants user the gateway's ClusterRole (impersonation) and the registry Role.
func bindGatewayRoles(t testing.TB, user string) {
	t.Helper()
	cs := admin(cluster(t))
	ctx := context.Background()
	subj := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: gatewayClusterRole + "-" + user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: gatewayClusterRole},
		Subjects:   subj,
	}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	bindRegistryRole(t, user)
}

func bindRegistryRole(t testing.TB, user string) {
	t.Helper()
	_, err := admin(cluster(t)).RbacV1().RoleBindings(registryNamespace).Create(context.Background(), &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: registryRole + "-" + user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: registryRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func unbindRegistryRole(t testing.TB, user string) {
	t.Helper()
	if err := admin(cluster(t)).RbacV1().RoleBindings(registryNamespace).Delete(context.Background(), registryRole+"-"+user, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func unbindGatewayRoles(t testing.TB, user string) {
	t.Helper()
	if err := admin(cluster(t)).RbacV1().ClusterRoleBindings().Delete(context.Background(), gatewayClusterRole+"-"+user, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	unbindRegistryRole(t, user)
}

// picogateCLI runs the picogate CLI as the admin and returns stdout; it fails the test on a non-zero exit.
func picogateCLI(t testing.TB, args ...string) string {
	t.Helper()
	out, err := runCLI(gatewaytest.Binary(t, "picogate"), cluster(t).AdminKubeconfig(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runCLI runs the picogate CLI binary with kubeconfig (safe from several goroutines).
func runCLI(bin, kubeconfig string, args ...string) (string, error) {
	cmd := exec.Command(bin, append(args, "--kubeconfig", kubeconfig)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("picogate %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// addDevices registers n token devices with `picogate device add --count`, and returns their
// credentials as the simulator reads them. The CLI's client is held to client-go's default 5 requests/s,
// about 2.5 s per 10 devices, so batches of devicesPerCLI run side by side, named PREFIX<batch>-<i>.
func addDevices(t testing.TB, prefix string, n int) []sim.Credential {
	t.Helper()
	bin, kubeconfig := gatewaytest.Binary(t, "picogate"), cluster(t).AdminKubeconfig()
	batches := (n + devicesPerCLI - 1) / devicesPerCLI
	out := make([][]sim.Credential, batches)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for b := range batches {
		count := min(devicesPerCLI, n-b*devicesPerCLI)
		p := prefix
		if batches > 1 {
			p = fmt.Sprintf("%s%d-", prefix, b+1)
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			js, err := runCLI(bin, kubeconfig, "device", "add", "--count", fmt.Sprint(count), "--prefix", p, "-o", "json")
			if err != nil {
				t.Error(err)
				return
			}
			if out[b], err = sim.ParseCredentials([]byte(js)); err != nil {
				t.Errorf("device add output: %v", err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	var creds []sim.Credential
	for _, c := range out {
		creds = append(creds, c...)
	}
	if len(creds) != n {
		t.Fatalf("device add: got %d credentials, want %d", len(creds), n)
	}
	return creds
}

const devicesPerCLI = 10

// addDevice registers one token device.
func addDevice(t testing.TB, name string) sim.Credential {
	t.Helper()
	var c sim.Credential
	if err := json.Unmarshal([]byte(picogateCLI(t, "device", "add", name, "-o", "json")), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// startGateway starts picogate serve with kubeconfig (the admin's when empty) and waits until ready.
func startGateway(t testing.TB, kubeconfig string, args ...string) *gatewaytest.Gateway {
	t.Helper()
	if kubeconfig == "" {
		kubeconfig = cluster(t).AdminKubeconfig()
	}
	return gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: kubeconfig, Args: args})
}
