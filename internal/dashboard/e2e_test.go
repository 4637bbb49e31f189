package dashboard

// End to end: the real picogate binary against a real control plane (etcd, kube-apiserver,
// kube-scheduler, kube-controller-manager), picosim boards through it, and the dashboard in a real
// headless Chromium. The controller-manager runs with --node-monitor-grace-period=20s (Kubernetes'
// default is 50s) so a stopped board turns NotReady within the test's time.

import (
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/picogate/picogate/device"
	"github.com/picogate/picogate/internal/controlplane"
	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
	"github.com/picogate/picogate/internal/gatewaytest"
	"github.com/picogate/picogate/internal/sim"
)

const nodeMonitorGrace = 20 * time.Second

func provision(t *testing.T, kubeconfig string, args ...string) []sim.Credential {
	t.Helper()
	cmd := exec.Command(gatewaytest.Binary(t, "picogate"), append(append([]string{"device", "add", "-o", "json"}, args...), "--kubeconfig", kubeconfig)...)
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

// leaseInterval is how often the test's boards renew their Lease (10s by default): a running board then
// makes a request at least this often, so "quiet" can be a few seconds and still never fire for one.
const leaseInterval = 2 * time.Second

// runBoards runs picosim boards until the returned stop is called (or the test ends).
func runBoards(t *testing.T, gateway string, creds []sim.Credential) (stop func()) {
	t.Helper()
	s, err := sim.New(sim.Config{Gateway: gateway, Credentials: creds, Tune: func(c *device.Config) { c.LeaseInterval = leaseInterval }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := s.Run(ctx); err != nil {
			t.Errorf("picosim: %v", err)
		}
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func TestDashboardEndToEnd(t *testing.T) {
	cp := controlplanetest.Start(t, controlplane.Config{Scheduler: true, ControllerManager: true, NodeMonitorGracePeriod: nodeMonitorGrace})
	kc := cp.AdminKubeconfig()
	gw := gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: kc})

	running := provision(t, kc, "--count", "3", "--prefix", "board-")
	stopped := provision(t, kc, "board-stops")
	hostile := provision(t, kc, "board-ua")
	boards := []string{"board-1", "board-2", "board-3", "board-stops", "board-ua"}

	runBoards(t, gw.URL(), running)
	stopBoard := runBoards(t, gw.URL(), stopped)

	// The gateway stops after the browser (cleanups run last first), so the page's stream has ended.
	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+gw.Admin+"/")); err != nil {
		t.Fatal(err)
	}
	// A board is quiet after 6s without a request: three Lease renewals of the test's boards, and well
	// below the grace period, so a stopped board turns quiet before it turns NotReady.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { const e = document.getElementById('f-quiet-after');
		e.value = '6'; e.dispatchEvent(new Event('input')); return true; })()`)); err != nil {
		t.Fatal(err)
	}

	t.Run("every board listed", func(t *testing.T) {
		waitRows(t, ctx, "every board listed", 30*time.Second, func(r map[string]rowState) bool {
			for _, b := range boards {
				if _, ok := r[b]; !ok {
					return false
				}
			}
			return len(r) == len(boards)
		})
	})

	t.Run("picosim boards Ready and seen", func(t *testing.T) {
		waitRows(t, ctx, "the running boards Ready and seen", 90*time.Second, func(r map[string]rowState) bool {
			for _, b := range []string{"board-1", "board-2", "board-3", "board-stops"} {
				if r[b].Ready != "True" || r[b].Quiet != "false" || !strings.HasPrefix(r[b].UA, "picogate-device/") {
					return false
				}
			}
			return r["board-ua"].Ready == "" && r["board-ua"].Seen == "never"
		})
	})

	t.Run("pods bound to a board", func(t *testing.T) {
		cs := kubernetes.NewForConfigOrDie(cp.AdminConfig())
		if _, err := cs.CoreV1().Pods("default").Create(context.Background(), &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "blink-on-board-1"},
			Spec: corev1.PodSpec{NodeName: "board-1", Tolerations: []corev1.Toleration{{Key: "picogate.io/mcu", Operator: corev1.TolerationOpExists}},
				Containers: []corev1.Container{{Name: "blink", Image: device.BlinkImage}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitRows(t, ctx, "board-1's pod Running", 60*time.Second, func(r map[string]rowState) bool { return r["board-1"].Pods == "1 Running" })
	})

	t.Run("hostile user agent renders as text", func(t *testing.T) {
		for _, path := range []string{"/api/v1/nodes/board-ua", "/api/v1/secrets"} { // the second is refused by the policy
			req, _ := http.NewRequest("GET", gw.URL()+path, nil)
			req.Header.Set("Authorization", "Bearer "+hostile[0].Token)
			req.Header.Set("User-Agent", hostileUA)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
		}
		waitRows(t, ctx, "the hostile user agent shown", 5*time.Second, func(r map[string]rowState) bool {
			return r["board-ua"].UA == hostileUA && strings.Contains(r["board-ua"].Errors, "policy 1")
		})
		if r := readRows(t, ctx)["board-ua"]; r.HasElement {
			t.Errorf("the user agent became markup: %+v", r)
		}
		pwned, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__pwned !== undefined || document.querySelectorAll('#fleet-body img, #fleet-body script, #fleet-body b').length > 0`))
		if err != nil || pwned {
			t.Errorf("the user agent ran or became markup (err %v)", err)
		}
	})

	screenshot(t, ctx, "dashboard-fleet.png")

	t.Run("revoked device shows revoked within 2s", func(t *testing.T) {
		out, err := exec.Command(gatewaytest.Binary(t, "picogate"), "device", "revoke", "board-2", "--kubeconfig", kc).CombinedOutput()
		if err != nil {
			t.Fatalf("picogate device revoke: %v: %s", err, out)
		}
		took := waitRows(t, ctx, "board-2 revoked", 2*time.Second, func(r map[string]rowState) bool { return r["board-2"].Status == "revoked" })
		t.Logf("board-2 shown revoked %v after the revoke command returned", took.Round(time.Millisecond))
	})

	t.Run("stopped board turns quiet, then NotReady", func(t *testing.T) {
		stopBoard()
		quietAfter := waitRows(t, ctx, "board-stops quiet", 30*time.Second, func(r map[string]rowState) bool {
			return r["board-stops"].Quiet == "true"
		})
		if r := readRows(t, ctx)["board-stops"]; r.Ready != "True" {
			t.Errorf("board-stops quiet and already %q: want it still Ready when it turns quiet", r.Ready)
		}
		notReady := waitRows(t, ctx, "board-stops NotReady", 3*nodeMonitorGrace+30*time.Second, func(r map[string]rowState) bool {
			return r["board-stops"].Ready == "Unknown" || r["board-stops"].Ready == "False"
		})
		t.Logf("board-stops quiet %v and NotReady %v after picosim stopped it", quietAfter.Round(100*time.Millisecond), (quietAfter + notReady).Round(100*time.Millisecond))
		if r := readRows(t, ctx)["board-1"]; r.Ready != "True" || r.Quiet != "false" {
			t.Errorf("board-1: got %+v, want still Ready and not quiet", r)
		}
		screenshot(t, ctx, "dashboard-fleet-end.png")
	})

	t.Run("device page", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.Navigate("http://"+gw.Admin+"/#/device/board-1")); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		var state struct {
			Conditions, Requests, Pods int
			Commands                   string
		}
		for time.Now().Before(deadline) {
			s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
				Conditions: document.querySelectorAll('#d-conditions tbody tr').length,
				Requests: document.querySelectorAll('#d-requests tbody tr').length,
				Pods: document.querySelectorAll('#d-pods tbody tr').length,
				Commands: document.getElementById('d-commands').textContent })`))
			if err == nil && json.Unmarshal([]byte(s), &state) == nil && state.Conditions > 0 && state.Requests > 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if state.Conditions == 0 || state.Requests == 0 || !strings.Contains(state.Commands, "picogate device revoke board-1") {
			t.Errorf("device page: got %+v, want Node conditions, requests and the revoke command", state)
		}
		screenshot(t, ctx, "dashboard-device.png")
	})

	// Last: the gateway stops cleanly while the page holds its live stream open (the admin port's
	// graceful shutdown would otherwise wait for the stream, give up and fail the exit).
	t.Run("shutdown with the page open", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.Navigate("http://"+gw.Admin+"/#/")); err != nil {
			t.Fatal(err)
		}
		waitRows(t, ctx, "the table streaming", 10*time.Second, func(r map[string]rowState) bool { return len(r) == len(boards) })
		start := time.Now()
		gw.Signal(syscall.SIGTERM)
		if err := gw.Wait(15 * time.Second); err != nil {
			t.Errorf("picogate serve with a dashboard stream open: got %v, want a clean exit", err)
		}
		t.Logf("picogate exited %v after SIGTERM with the page open", time.Since(start).Round(time.Millisecond))
	})
}
