package reliability

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/picogate/picogate/internal/sim"
)

// fleet is a running simulated fleet (the device package's agents, as picosim runs them).
type fleet struct {
	s     *sim.Simulator
	names []string
	stop  func() *sim.Report
}

// startFleet runs cfg's devices until the test ends or stop is called.
func startFleet(t *testing.T, cfg sim.Config) *fleet {
	t.Helper()
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var rep *sim.Report
	var wg sync.WaitGroup
	wg.Go(func() {
		var err error
		if rep, err = s.Run(ctx); err != nil {
			t.Errorf("simulator: %v", err)
		}
	})
	var once sync.Once
	f := &fleet{s: s}
	for _, c := range cfg.Credentials {
		f.names = append(f.names, c.Name)
	}
	f.stop = func() *sim.Report {
		once.Do(func() { cancel(); wg.Wait() })
		return rep
	}
	t.Cleanup(func() { f.stop() })
	return f
}

// notReady returns the devices that do not consider themselves Ready (lease current) now.
func (f *fleet) notReady() []string {
	var out []string
	for _, d := range f.s.Snapshot() {
		if !d.Ready {
			out = append(out, d.Name)
		}
	}
	return out
}

// errors sums the fleet's error counters now.
func (f *fleet) errors() map[string]uint64 {
	out := map[string]uint64{}
	for _, d := range f.s.Snapshot() {
		for k, v := range d.Errors {
			out[k] += v
		}
	}
	return out
}

// lastErrors returns each failing device's last error, "NAME: ERROR", so a report of errors says which
// request failed and how.
func (f *fleet) lastErrors() []string {
	var out []string
	for _, d := range f.s.Snapshot() {
		if len(d.Errors) > 0 {
			out = append(out, d.Name+": "+d.LastError)
		}
	}
	return out
}

// progress returns a counter of every device now.
func (f *fleet) progress(counter func(sim.DeviceReport) uint64) map[string]uint64 {
	out := map[string]uint64{}
	for _, d := range f.s.Snapshot() {
		out[d.Name] = counter(d)
	}
	return out
}

// advanced says which devices' counter has not moved past its value in since.
func (f *fleet) advanced(since map[string]uint64, counter func(sim.DeviceReport) uint64) error {
	var behind []string
	for _, d := range f.s.Snapshot() {
		if counter(d) <= since[d.Name] {
			behind = append(behind, d.Name)
		}
	}
	if len(behind) > 0 {
		return fmt.Errorf("%d devices have not advanced (%s)", len(behind), head(behind))
	}
	return nil
}

func (f *fleet) requests() uint64 {
	var n uint64
	for _, d := range f.s.Snapshot() {
		n += d.Requests
	}
	return n
}

// converged checks, in the API server, that every device's Lease was renewed after since and its Node
// is Ready=True: the cluster's view of a healthy fleet.
func (f *fleet) converged(ctx context.Context, t testing.TB, since time.Time) error {
	cs := admin(cluster(t))
	leases, err := cs.CoordinationV1().Leases("kube-node-lease").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	renewed := map[string]bool{}
	for _, l := range leases.Items {
		if l.Spec.RenewTime != nil && l.Spec.RenewTime.After(since) {
			renewed[l.Name] = true
		}
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	ready := map[string]bool{}
	for _, n := range nodes.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready[n.Name] = true
			}
		}
	}
	var stale, notReady []string
	for _, name := range f.names {
		if !renewed[name] {
			stale = append(stale, name)
		}
		if !ready[name] {
			notReady = append(notReady, name)
		}
	}
	if len(stale)+len(notReady) > 0 {
		return fmt.Errorf("%d leases not renewed since %s (%s), %d nodes not Ready (%s)", len(stale), since.Format("15:04:05.000"), head(stale), len(notReady), head(notReady))
	}
	if nr := f.notReady(); len(nr) > 0 {
		return fmt.Errorf("%d devices not Ready by their own account (%s)", len(nr), head(nr))
	}
	return nil
}

func head(names []string) string {
	if len(names) > 5 {
		return strings.Join(names[:5], ", ") + ", ..."
	}
	return strings.Join(names, ", ")
}

// waitFor polls f every interval until it returns nil or timeout passes; it returns how long it took
// and the last error.
func waitFor(timeout, interval time.Duration, f func() error) (time.Duration, error) {
	start := time.Now()
	for {
		err := f()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return time.Since(start), err
		}
		time.Sleep(interval)
	}
}
