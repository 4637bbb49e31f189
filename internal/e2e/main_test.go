// Package e2e tests picogate end to end: the real picogate binary against a real kube-apiserver and
// etcd (../../bin, built by `make controlplane`), over real TCP on loopback.
package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes"

	"github.com/picogate/picogate/internal/controlplane"
	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
	"github.com/picogate/picogate/internal/gatewaytest"
)

// shared is the package's control plane: the tests use their own device names. It audits requests, so
// tests can count what reached the API server.
var shared = &controlplanetest.Shared{
	AuditPolicy: `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
`,
	Setup: func(c *controlplane.ControlPlane) error {
		// No controller manager runs here: the default ServiceAccount pods need is created by hand.
		ctx, cs := context.Background(), admin(c)
		if err := controlplanetest.CreateDefaultServiceAccount(ctx, cs); err != nil {
			return err
		}
		if err := controlplanetest.SeedFleet(ctx, cs); err != nil {
			return err
		}
		return grantSharedIdentity(ctx, c)
	},
}

func TestMain(m *testing.M) { shared.Main(m) }

// cluster returns the shared control plane, starting it on first use.
func cluster(t testing.TB) *controlplane.ControlPlane {
	t.Helper()
	return shared.Get(t)
}

func admin(c *controlplane.ControlPlane) kubernetes.Interface {
	return kubernetes.NewForConfigOrDie(c.AdminConfig())
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
	type event struct {
		UserAgent        string `json:"userAgent"`
		ImpersonatedUser *struct {
			Username string `json:"username"`
		} `json:"impersonatedUser"`
	}
	out := map[string]int{}
	for _, ev := range controlplanetest.ReadAudit(t, shared.AuditLog(), func(ev *event) bool { return ev.ImpersonatedUser != nil }) {
		out[ev.UserAgent]++
	}
	return out
}

// execPicogate prepares the CLI without the test's kubeconfig.
func execPicogate(t testing.TB, args ...string) *exec.Cmd {
	return exec.Command(gatewaytest.Binary(t, "picogate"), args...)
}
