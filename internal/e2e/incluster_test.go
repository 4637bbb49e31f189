package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/picogate/picogate/internal/gatewaytest"
)

// serviceAccountDir lays out a folder as the kubelet lays out /var/run/secrets/kubernetes.io/serviceaccount
// (token, ca.crt, namespace), and a kubeconfig that names its token and CA by path: the same rest.Config
// fields rest.InClusterConfig fills (Host, CAFile, BearerTokenFile), which this test cannot use without
// writing to that fixed system path.
type serviceAccountDir struct {
	dir, kubeconfig string
}

func newServiceAccountDir(t testing.TB, token string) serviceAccountDir {
	t.Helper()
	root := t.TempDir()
	sa := serviceAccountDir{dir: filepath.Join(root, "serviceaccount"), kubeconfig: filepath.Join(root, "kubeconfig")}
	if err := os.MkdirAll(sa.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(cluster(t).CAFile())
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"ca.crt": string(ca), "namespace": "picogate-system", "token": token} {
		sa.replace(t, name, data)
	}
	cfg := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"in-cluster": {Server: cluster(t).URL(), CertificateAuthority: filepath.Join(sa.dir, "ca.crt")}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"in-cluster": {TokenFile: filepath.Join(sa.dir, "token")}},
		Contexts:       map[string]*clientcmdapi.Context{"in-cluster": {Cluster: "in-cluster", AuthInfo: "in-cluster"}},
		CurrentContext: "in-cluster",
	}
	if err := clientcmd.WriteToFile(cfg, sa.kubeconfig); err != nil {
		t.Fatal(err)
	}
	return sa
}

// replace swaps a file atomically, as the kubelet swaps a projected token.
func (sa serviceAccountDir) replace(t testing.TB, name, data string) {
	t.Helper()
	tmp := filepath.Join(sa.dir, "."+name+".new")
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(sa.dir, name)); err != nil {
		t.Fatal(err)
	}
}

// boundToken issues a token of the gateway's ServiceAccount bound to a new Secret, as the kubelet binds a
// pod's token to the pod: deleting the Secret revokes the token.
func boundToken(t testing.TB, cs kubernetes.Interface, secret string) string {
	t.Helper()
	ctx := context.Background()
	s, err := cs.CoreV1().Secrets("picogate-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Secrets("picogate-system").Delete(context.Background(), secret, metav1.DeleteOptions{})
	})
	secs := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts("picogate-system").CreateToken(ctx, "picogate", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &secs,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: secret, UID: s.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// TestInClusterStyleTokenRotation runs the gateway on service-account files only (a token file and the
// CA file, as in a pod), then rotates the token the way the kubelet does (new token, file swapped) and
// revokes the old one, which proves the running gateway carries on with the new file, without a restart.
func TestInClusterStyleTokenRotation(t *testing.T) {
	runSetup(t) // the RBAC and the ServiceAccount
	cs := admin(cluster(t))
	ctx := context.Background()
	sa := newServiceAccountDir(t, boundToken(t, cs, "incluster-bind-1"))
	gw := startGatewayWith(t, sa.kubeconfig)
	cred := addDevice(t, "incluster-dev-1")
	waitAuthenticated(t, gw, cred.Token)
	if r := firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, "incluster-dev-1", "127.0.0.1"), cred.Header); r.code != 201 {
		t.Fatalf("POST node: got %d %s, want 201", r.code, r.body)
	}

	old, _ := os.ReadFile(filepath.Join(sa.dir, "token"))
	sa.replace(t, "token", boundToken(t, cs, "incluster-bind-2"))
	if err := cs.CoreV1().Secrets("picogate-system").Delete(ctx, "incluster-bind-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	oldClient := kubernetes.NewForConfigOrDie(&rest.Config{Host: cluster(t).URL(), BearerToken: string(old), TLSClientConfig: rest.TLSClientConfig{CAFile: cluster(t).CAFile()}})
	if !gatewaytest.WaitFor(ctx, 10*time.Second, func() bool {
		_, err := oldClient.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		return apierrors.IsUnauthorized(err)
	}) {
		t.Fatal("the old token still authenticates 10s after its Secret was deleted")
	}
	revoked := time.Now()
	// client-go re-reads a token file about once a minute (the kubelet renews a pod's token well before
	// the old one expires, so this wait is a worst case: here the old token is revoked at once).
	var codes []int
	for {
		r := firmwareDo(t, gw.Addr, "", "GET", "/api/v1/nodes/incluster-dev-1", "", "", cred.Header)
		codes = append(codes, r.code)
		if r.code == 200 {
			break
		}
		if time.Since(revoked) > 75*time.Second {
			t.Fatalf("device refused for 75s after the token rotation: last codes %v", codes[max(0, len(codes)-5):])
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("first device request after the old token's revocation: %v later, after %d request(s) (codes %v)", time.Since(revoked).Round(time.Millisecond), len(codes), codes[:min(len(codes), 5)])
	if !gatewaytest.WaitFor(ctx, 10*time.Second, gw.Ready) {
		t.Error("gateway not ready with the rotated token")
	}
	// The registry watch works with the new token too: a device added now is accepted.
	cred2 := addDevice(t, "incluster-dev-2")
	waitAuthenticated(t, gw, cred2.Token)
}
