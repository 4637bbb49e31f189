package sim_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/picogate/picogate/device"
	"github.com/picogate/picogate/internal/controlplane"
	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
	"github.com/picogate/picogate/internal/gatewaytest"
	"github.com/picogate/picogate/internal/sim"
)

// enrollmentToken runs `picogate token create -o json` and returns the token and the gateway key it
// prints for the boards to pin.
func (e *env) enrollmentToken(t *testing.T, args ...string) (string, []byte) {
	t.Helper()
	cmd := exec.Command(gatewaytest.Binary(t, "picogate"), append(append([]string{"token", "create", "-o", "json"}, args...), "--kubeconfig", e.cp.AdminKubeconfig())...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("picogate token create %v: %v: %s", args, err, stderr.String())
	}
	var tok struct{ Token, GatewayKey string }
	if err := json.Unmarshal(out, &tok); err != nil {
		t.Fatalf("token create -o json: %v", err)
	}
	key, err := device.ParseGatewayKey(tok.GatewayKey)
	if err != nil {
		t.Fatalf("token create -o json: gatewayKey: %v", err)
	}
	return tok.Token, key
}

// TestEnrollingFleetThroughGateway: boards that enroll themselves (picosim --enroll-token) on a
// --require-hmac gateway, in both modes, agree their keys with the gateway and become Ready nodes,
// every signed request accepted.
func TestEnrollingFleetThroughGateway(t *testing.T) {
	cp := controlplanetest.Start(t, controlplane.Config{})
	cs := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	seedFleetConfig(t, cs)
	// The registry namespace, which `picogate setup` creates in a real installation.
	must(t, create(cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "picogate-system"}}, metav1.CreateOptions{})))
	gw := gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: cp.AdminKubeconfig(), Args: []string{"--enrollment", "--require-hmac"}})
	e := &env{cp: cp, cs: cs, gw: gw}
	url := "http://" + gw.Addr

	agentToken, key := e.enrollmentToken(t, "--uses", "2", "--prefix", "enr-")
	fwToken, fwKey := e.enrollmentToken(t, "--uses", "1", "--prefix", "enrfw-")
	stopAgents := fleet(t, sim.Config{Gateway: url, Enrollment: &sim.Enrollment{Token: agentToken, GatewayKey: key, Count: 2, Prefix: "enr-"}})
	stopFirmware := fleet(t, sim.Config{Gateway: url, Mode: sim.ModeFirmware, Enrollment: &sim.Enrollment{Token: fwToken, GatewayKey: fwKey, Count: 1, Prefix: "enrfw-"},
		FirmwareStatusInterval: 500 * time.Millisecond, FirmwareConfigInterval: time.Second})
	for _, name := range []string{"enr-1", "enr-2", "enrfw-1"} {
		e.waitNodeReady(t, name, corev1.ConditionTrue, 30*time.Second)
	}
	for name, want := range map[string]struct {
		rep *sim.Report
		n   int
	}{"agents": {stopAgents(), 2}, "firmware": {stopFirmware(), 1}} {
		rep := want.rep
		if rep == nil || !rep.Enrolling || rep.Enrolled != want.n || rep.Requests == 0 {
			t.Fatalf("%s: got report %+v, want %d boards enrolled and requests made", name, rep, want.n)
		}
		if len(rep.Errors) != 0 {
			t.Errorf("%s: errors: got %v, want none (every enrollment and signed request accepted)", name, rep.Errors)
		}
		t.Logf("%s: %d boards enrolled with key agreement, slowest in %.3f s", name, rep.Enrolled, rep.EnrollSecondsMax)
	}
}
