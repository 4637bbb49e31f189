package sim_test

import (
	"context"
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

// TestHMACFleetThroughGateway runs hmac-mode devices (credentials from `device add --auth hmac`) in
// both modes against a gateway started with --require-hmac, which refuses anything unsigned: agents
// become Ready nodes, renew their Lease and run a pod through a signed watch; firmware-mode devices
// sign each hand-written request on the board's clock.
func TestHMACFleetThroughGateway(t *testing.T) {
	cp := controlplanetest.Start(t, controlplane.Config{})
	cs := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	seedFleetConfig(t, cs)
	// No controller manager here: the ServiceAccount pod admission wants is created by hand.
	must(t, create(cs.CoreV1().ServiceAccounts("default").Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})))
	gw := gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: cp.AdminKubeconfig(), Args: []string{"--require-hmac"}})
	e := &env{cp: cp, cs: cs, gw: gw}
	agents := e.provision(t, "--count", "2", "--prefix", "hm-", "--auth", "hmac")
	firmware := e.provision(t, "hm-fw", "--auth", "hmac")
	for _, c := range append(agents, firmware...) {
		if c.Auth != "hmac" || len(c.Key) != 64 {
			t.Fatalf("provisioned %s: got auth %q and a %d-character key, want hmac and 64", c.Name, c.Auth, len(c.Key))
		}
	}
	url := "http://" + gw.Addr
	stopAgents := fleet(t, sim.Config{Gateway: url, Credentials: agents})
	stopFirmware := fleet(t, sim.Config{Gateway: url, Credentials: firmware, Mode: sim.ModeFirmware,
		FirmwareStatusInterval: 500 * time.Millisecond, FirmwareConfigInterval: time.Second})
	for _, c := range append(agents, firmware...) {
		e.waitNodeReady(t, c.Name, corev1.ConditionTrue, 30*time.Second)
	}
	first := e.lease(t, "hm-1").Spec.RenewTime.Time
	p := e.createPod(t, "signed-watch", "hm-2", device.BlinkImage, corev1.RestartPolicyAlways)
	e.waitPodPhase(t, p.Name, corev1.PodRunning, 30*time.Second)
	eventually(t, 15*time.Second, "lease renewed with signed requests", func() error {
		if r := e.lease(t, "hm-1").Spec.RenewTime.Time; !r.After(first) {
			return errNotYet
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	for name, rep := range map[string]*sim.Report{"agents": stopAgents(), "firmware": stopFirmware()} {
		if rep == nil || rep.Requests == 0 {
			t.Fatalf("%s: no report or no requests", name)
		}
		if len(rep.Errors) != 0 {
			t.Errorf("%s: errors: got %v, want none (every signed request accepted)", name, rep.Errors)
		}
	}
}

var errNotYet = errorString("not yet")

type errorString string

func (e errorString) Error() string { return string(e) }
