package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/picogate/picogate/internal/gatewaytest"
)

// runSetup runs `picogate setup` with the admin kubeconfig, writing the gateway's kubeconfig into a new
// folder; it returns the kubeconfig's path and what setup printed.
func runSetup(t testing.TB, args ...string) (kubeconfig, stdout string) {
	t.Helper()
	kubeconfig = filepath.Join(t.TempDir(), "picogate", "kubeconfig")
	stdout = picogate(t, append([]string{"setup", "--output", kubeconfig}, args...)...)
	return kubeconfig, stdout
}

// gatewayClient is a client with exactly the credential setup wrote.
func gatewayClient(t testing.TB, kubeconfig string, mutate func(*rest.Config)) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("loading %s: %v", kubeconfig, err)
	}
	if mutate != nil {
		mutate(rc)
	}
	return kubernetes.NewForConfigOrDie(rc)
}

// startGatewayWith starts picogate serve with the given kubeconfig instead of the admin's.
func startGatewayWith(t testing.TB, kubeconfig string, args ...string) *gatewaytest.Gateway {
	t.Helper()
	return gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: kubeconfig, Args: args})
}

// TestSetupCredentialServesDevices: `picogate setup` writes a kubeconfig (0600, token and CA by file) that
// the gateway serves a device with, and running it again changes nothing but the token.
func TestSetupCredentialServesDevices(t *testing.T) {
	kc, out := runSetup(t, "--token-ttl", "2h")
	for _, want := range []string{"applied Namespace picogate-system", "applied ClusterRoleBinding picogate-gateway",
		"applied RoleBinding picogate-system/picogate-registry-reader", "token for system:serviceaccount:picogate-system:picogate valid until", "wrote " + kc} {
		if !strings.Contains(out, want) {
			t.Errorf("setup output: got %q, want %q in it", out, want)
		}
	}
	for _, p := range []string{kc, kc + ".token", kc + ".ca.crt"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: got mode %o, want 600", p, fi.Mode().Perm())
		}
	}
	cfg, err := clientcmd.LoadFromFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	kuser, kcluster := cfg.AuthInfos[cfg.Contexts[cfg.CurrentContext].AuthInfo], cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster]
	if kuser.TokenFile != kc+".token" || kuser.Token != "" || kuser.ClientCertificate != "" || kuser.ClientCertificateData != nil {
		t.Errorf("kubeconfig user: got %+v, want the token file alone", kuser)
	}
	if kcluster.Server != clusterURL(t) || kcluster.CertificateAuthority != kc+".ca.crt" {
		t.Errorf("kubeconfig cluster: got server %s CA %s, want %s and the CA file", kcluster.Server, kcluster.CertificateAuthority, clusterURL(t))
	}
	if ca, _ := os.ReadFile(kc + ".ca.crt"); !strings.Contains(string(ca), "BEGIN CERTIFICATE") {
		t.Errorf("CA file: got %q, want a PEM certificate", ca)
	}
	token1, _ := os.ReadFile(kc + ".token")
	if ttl := tokenLifetime(t, string(token1)); ttl != 2*time.Hour {
		t.Errorf("--token-ttl 2h: got a token valid for %s, want 2h", ttl)
	}

	// Idempotent: a second run applies the same objects, issues a new token and leaves one binding subject.
	picogate(t, "setup", "--output", kc, "--token-ttl", "2h")
	token2, _ := os.ReadFile(kc + ".token")
	if string(token2) == string(token1) {
		t.Error("second setup: got the same token, want a new one (that is how it renews)")
	}
	crb, err := admin(cluster(t)).RbacV1().ClusterRoleBindings().Get(context.Background(), "picogate-gateway", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(crb.Subjects) != 1 || crb.Subjects[0].Name != "picogate" || crb.Subjects[0].Namespace != "picogate-system" {
		t.Errorf("ClusterRoleBinding after two runs: got subjects %+v, want the one ServiceAccount", crb.Subjects)
	}

	gw := startGatewayWith(t, kc)
	cred := addDevice(t, "setup-dev-1")
	waitAuthenticated(t, gw, cred.Token)
	firmwareSequence(t, gw.Addr, "", "setup-dev-1", cred.Header)
	if !strings.Contains(gw.Log(), kc) {
		t.Errorf("gateway log: want it to name the kubeconfig %s it runs with", kc)
	}
}

// TestSetupCredentialCanDoNothingElse: the gateway's credential may read the device records and
// impersonate device nodes, and nothing more. Each row is asked of the API server's authorizer
// (SelfSubjectAccessReview) with the written kubeconfig; the headline refusals are also tried for real.
func TestSetupCredentialCanDoNothingElse(t *testing.T) {
	kc, _ := runSetup(t)
	cs := gatewayClient(t, kc, nil)
	ctx := context.Background()
	res := func(verb, group, resource, ns, name string) *authorizationv1.ResourceAttributes {
		return &authorizationv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource, Namespace: ns, Name: name}
	}
	tests := []struct {
		name  string
		attrs *authorizationv1.ResourceAttributes
		want  bool
	}{
		{"watch device records", res("watch", "", "secrets", "picogate-system", ""), true},
		{"list device records", res("list", "", "secrets", "picogate-system", ""), true},
		{"impersonate a device node", res("impersonate", "", "users", "", "system:node:pico-1"), true},
		{"impersonate group system:nodes", res("impersonate", "", "groups", "", "system:nodes"), true},
		{"impersonate group picogate:devices", res("impersonate", "", "groups", "", "picogate:devices"), true},
		{"impersonate group system:masters", res("impersonate", "", "groups", "", "system:masters"), false},
		{"impersonate group system:authenticated", res("impersonate", "", "groups", "", "system:authenticated"), false},
		{"impersonate a service account", res("impersonate", "", "serviceaccounts", "kube-system", "default"), false},
		{"impersonate user extras", res("impersonate", "authentication.k8s.io", "userextras", "", "scopes"), false},
		{"impersonate uids", res("impersonate", "authentication.k8s.io", "uids", "", "x"), false},
		{"list secrets in kube-system", res("list", "", "secrets", "kube-system", ""), false},
		{"list secrets in every namespace", res("list", "", "secrets", "", ""), false},
		{"get a secret in default", res("get", "", "secrets", "default", "x"), false},
		{"create a secret in its namespace", res("create", "", "secrets", "picogate-system", ""), false},
		{"update a device record", res("update", "", "secrets", "picogate-system", "device-x"), false},
		{"delete a device record", res("delete", "", "secrets", "picogate-system", "device-x"), false},
		{"create a ClusterRoleBinding", res("create", "rbac.authorization.k8s.io", "clusterrolebindings", "", ""), false},
		{"create a RoleBinding in its namespace", res("create", "rbac.authorization.k8s.io", "rolebindings", "picogate-system", ""), false},
		{"bind a ClusterRole", res("bind", "rbac.authorization.k8s.io", "clusterroles", "", "cluster-admin"), false},
		{"escalate its Role", res("escalate", "rbac.authorization.k8s.io", "roles", "picogate-system", "picogate-registry-reader"), false},
		{"request its own token", res("create", "", "serviceaccounts/token", "picogate-system", "picogate"), false},
		{"create pods", res("create", "", "pods", "picogate-system", ""), false},
		// Node metadata: how the gateway tells a device's Node from a real node.
		{"list nodes", res("list", "", "nodes", "", ""), true},
		{"watch nodes", res("watch", "", "nodes", "", ""), true},
		{"get a node", res("get", "", "nodes", "", "worker-1"), true},
		{"create a node", res("create", "", "nodes", "", ""), false},
		{"label a node", res("patch", "", "nodes", "", "worker-1"), false},
		{"patch a node's status", &authorizationv1.ResourceAttributes{Verb: "patch", Resource: "nodes", Subresource: "status", Name: "worker-1"}, false},
		{"delete a node", res("delete", "", "nodes", "", "pico-1"), false},
		// The fleet dashboard: Lease ages and the phases of pods bound to device nodes, read-only.
		{"watch pods", res("watch", "", "pods", "", ""), true},
		{"watch leases in kube-node-lease", res("watch", "coordination.k8s.io", "leases", "kube-node-lease", ""), true},
		{"get a pod", res("get", "", "pods", "default", "x"), false},
		{"renew a device's Lease", res("update", "coordination.k8s.io", "leases", "kube-node-lease", "pico-1"), false},
		{"delete a pod", res("delete", "", "pods", "default", "x"), false},
		{"impersonate the shared identity's group (without --shared-identity)", res("impersonate", "", "groups", "", "picogate:shared"), false},
		{"sign certificates", res("create", "certificates.k8s.io", "certificatesigningrequests", "", ""), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: tt.attrs}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if r.Status.Allowed != tt.want {
				t.Errorf("got allowed=%v (%s), want %v", r.Status.Allowed, r.Status.Reason, tt.want)
			}
		})
	}

	// The same refusals, tried for real.
	forbidden := []struct {
		name string
		do   func() error
	}{
		{"list secrets in kube-system", func() error {
			_, err := cs.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"create a secret in its namespace", func() error {
			_, err := cs.CoreV1().Secrets("picogate-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "planted"}}, metav1.CreateOptions{})
			return err
		}},
		{"create a ClusterRoleBinding to cluster-admin", func() error {
			_, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "picogate-escalation"},
				RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
				Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "picogate", Namespace: "picogate-system"}},
			}, metav1.CreateOptions{})
			return err
		}},
		{"impersonate group system:masters", func() error {
			c := gatewayClient(t, kc, func(rc *rest.Config) {
				rc.Impersonate = rest.ImpersonationConfig{UserName: "system:node:pico-1", Groups: []string{"system:masters"}}
			})
			_, err := c.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"impersonate system:masters alongside the device groups", func() error {
			c := gatewayClient(t, kc, func(rc *rest.Config) {
				rc.Impersonate = rest.ImpersonationConfig{UserName: "system:node:pico-1", Groups: []string{"system:nodes", "picogate:devices", "system:masters"}}
			})
			_, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			return err
		}},
		{"impersonate the admin's user name (its power is its group, which does not come along)", func() error {
			c := gatewayClient(t, kc, func(rc *rest.Config) { rc.Impersonate = rest.ImpersonationConfig{UserName: "system:admin"} })
			_, err := c.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"impersonate a service account", func() error {
			c := gatewayClient(t, kc, func(rc *rest.Config) {
				rc.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:kube-system:default"}
			})
			_, err := c.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
			return err
		}},
	}
	for _, tt := range forbidden {
		t.Run("for real: "+tt.name, func(t *testing.T) {
			if err := tt.do(); !apierrors.IsForbidden(err) {
				t.Errorf("got %v, want 403 Forbidden", err)
			}
		})
	}
	if _, err := admin(cluster(t)).CoreV1().Secrets("picogate-system").Get(ctx, "planted", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a refused create left a secret behind: %v", err)
	}
}

// TestSetupOtherNamespace: --namespace moves the whole RBAC there; the gateway serves from that registry
// and its credential cannot read the default one.
func TestSetupOtherNamespace(t *testing.T) {
	kc, out := runSetup(t, "--namespace", "picogate-lab")
	if !strings.Contains(out, "applied ClusterRoleBinding picogate-gateway-picogate-lab") {
		t.Errorf("setup output: got %q, want a ClusterRoleBinding of its own", out)
	}
	gw := startGatewayWith(t, kc, "--namespace", "picogate-lab")
	cred := addDevice(t, "lab-dev-1", "--namespace", "picogate-lab")
	waitAuthenticated(t, gw, cred.Token)
	if r := firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, "lab-dev-1", "127.0.0.1"), cred.Header); r.code != 201 {
		t.Fatalf("POST node through the picogate-lab gateway: got %d %s, want 201", r.code, r.body)
	}
	_, err := gatewayClient(t, kc, nil).CoreV1().Secrets("picogate-system").List(context.Background(), metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("picogate-lab's credential listing picogate-system's records: got %v, want 403", err)
	}
}

// TestSetupErrors: bad input and an unreachable API server are one line on stderr and a non-zero exit,
// and nothing is written.
func TestSetupErrors(t *testing.T) {
	dir := t.TempDir()
	dead := filepath.Join(dir, "dead.kubeconfig")
	if err := os.WriteFile(dead, []byte(deadKubeconfig(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out", "kubeconfig")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"ttl too short", []string{"--token-ttl", "1m"}, "at least 10m0s"},
		{"bad namespace", []string{"--namespace", "Not_A_Namespace"}, "--namespace"},
		{"unknown owner", []string{"--owner", "no-such-user-picogate"}, `no user "no-such-user-picogate"`},
		{"unreachable API server", []string{"--kubeconfig", dead}, "setup with " + dead},
		{"missing admin kubeconfig", []string{"--kubeconfig", filepath.Join(dir, "nope")}, "reading kubeconfig"},
		{"extra argument", []string{"now"}, "no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"setup", "--output", out}, tt.args...)
			var stderr string
			var err error
			if hasFlag(tt.args, "--kubeconfig") {
				cmd := execPicogate(t, args...)
				var b strings.Builder
				cmd.Stderr = &b
				err = cmd.Run()
				stderr = b.String()
			} else {
				_, stderr, err = picogateResult(t, args...)
			}
			if err == nil {
				t.Fatal("got exit 0, want an error")
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(lines) != 1 || !strings.Contains(stderr, tt.want) {
				t.Errorf("got %q, want one line mentioning %q", stderr, tt.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("a failed setup wrote %s", out)
			}
		})
	}
}

func hasFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == flag {
			return true
		}
	}
	return false
}

// deadKubeconfig is the admin's kubeconfig pointed at a closed port.
func deadKubeconfig(t testing.TB) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(cluster(t).AdminKubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + gatewaytest.FreeAddr(t)
	}
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func clusterURL(t testing.TB) string { return cluster(t).URL() }

// tokenLifetime reads exp - iat from a service-account JWT (its payload is not secret to its holder).
func tokenLifetime(t testing.TB, token string) time.Duration {
	t.Helper()
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) != 3 {
		t.Fatalf("token: got %d JWT parts, want 3", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("token payload: %v", err)
	}
	var claims struct{ Exp, Iat int64 }
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatalf("token claims: %v", err)
	}
	return time.Duration(claims.Exp-claims.Iat) * time.Second
}
