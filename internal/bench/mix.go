package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/picogate/picogate/internal/sim"
)

// readSimReport reads picosim's --report-json.
func readSimReport(path string) (*sim.Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r sim.Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// mixResult is one round of the mixed fleet: picosim's agents and firmware boards together.
type mixResult struct {
	agent, firmware *sim.Report
	elapsed         time.Duration
}

// runMix runs half of the mix devices as agents (the device package: node, lease, status, pod watch)
// and half as the reference firmware (new connection per request, status every 10 s, config every
// 30 s), in two picosim processes at once, through t. The window is the whole run, boot included.
func (l *lab) runMix(ctx context.Context, t *target, window func(bool)) (mixResult, error) {
	if err := l.mixCredentials(ctx); err != nil {
		return mixResult{}, err
	}
	if err := l.resetDevices(ctx); err != nil {
		return mixResult{}, err
	}
	var res mixResult
	dur := l.cfg.MixDuration.String()
	dir := filepath.Join(l.dir, "mix-"+t.name+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, fmt.Errorf("mix folder: %w", err)
	}
	window(true)
	start := time.Now()
	var procs []*child
	for _, mode := range []string{"agent", "firmware"} {
		c, err := startChild("picosim "+mode, filepath.Join(dir, mode+".log"), filepath.Join(l.cfg.BinDir, "picosim"),
			"--gateway", "http://"+t.endpoint.Addr, "--credentials", filepath.Join(l.dir, "mix-"+mode+".json"),
			"--mode", mode, "--duration", dur, "--report-json", filepath.Join(dir, mode+".json"))
		if err != nil {
			return res, err
		}
		procs = append(procs, c)
	}
	var errs []error
	for _, c := range procs {
		select {
		case <-c.done:
		case <-ctx.Done():
			errs = append(errs, c.stop(5*time.Second))
		case <-time.After(l.cfg.MixDuration + 60*time.Second):
			errs = append(errs, fmt.Errorf("%s did not finish in time: %s", c.name, c.tail(5)), c.stop(5*time.Second))
		}
	}
	res.elapsed = time.Since(start)
	window(false)
	for i, out := range []**sim.Report{&res.agent, &res.firmware} {
		var err error
		if *out, err = readSimReport(filepath.Join(dir, []string{"agent", "firmware"}[i]+".json")); err != nil {
			*out = &sim.Report{}
			errs = append(errs, fmt.Errorf("%s report: %w (%s)", procs[i].name, err, procs[i].tail(5)))
		}
	}
	return res, errors.Join(errs...)
}

// mixCredentials registers the mix devices once: mix-1 … mix-N, the first half agents.
func (l *lab) mixCredentials(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(l.dir, "mix-firmware.json")); err == nil {
		return nil
	}
	creds, err := l.addDevices(ctx, "mix-", l.cfg.MixDevices)
	if err != nil {
		return err
	}
	half := len(creds) / 2
	for name, part := range map[string][]credential{"agent": creds[:half], "firmware": creds[half:]} {
		b, err := json.Marshal(part)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(l.dir, "mix-"+name+".json"), b, 0o600); err != nil {
			return fmt.Errorf("writing mix credentials: %w", err)
		}
	}
	return nil
}

// resetDevices deletes every Node but the bench's own and every node Lease, so each target (or fleet
// size) sees a fleet booting for the first time rather than the 409s of devices an earlier run
// registered. One collection delete each: the API server does the work, not 10,000 client requests.
// A collection of 10,000 can outlast the API server's request timeout (60 s), which ends the call
// but keeps what was deleted, so each is repeated until nothing is left.
func (l *lab) resetDevices(ctx context.Context) error {
	nodes := metav1.ListOptions{LabelSelector: "!" + loadNodeLabel}
	err := untilGone(ctx, "the simulated fleet's nodes", func() error {
		return l.admin.CoreV1().Nodes().DeleteCollection(ctx, metav1.DeleteOptions{}, nodes)
	}, func() (bool, error) {
		nodes := nodes
		nodes.Limit = 1
		list, err := l.admin.CoreV1().Nodes().List(ctx, nodes)
		return list != nil && len(list.Items) == 0, err
	})
	if err != nil {
		return err
	}
	leases := l.admin.CoordinationV1().Leases("kube-node-lease")
	return untilGone(ctx, "the simulated fleet's leases", func() error {
		return leases.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	}, func() (bool, error) {
		list, err := leases.List(ctx, metav1.ListOptions{Limit: 1})
		return list != nil && len(list.Items) == 0, err
	})
}

// untilGone calls del until gone reports nothing left, at most 10 times.
func untilGone(ctx context.Context, what string, del func() error, gone func() (bool, error)) error {
	var last error
	for range 10 {
		last = del()
		ok, err := gone()
		if err == nil && ok {
			return nil
		}
		if last == nil {
			last = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("deleting %s: some are left (%v)", what, last)
}

// addMix adds a fleet-mix round: requests and errors as picosim counted them; no latencies (picosim
// does not time requests).
func (c *cell) addMix(r mixResult, u usage) {
	for _, s := range []*sim.Report{r.agent, r.firmware} {
		c.requests += int64(s.Requests)
		m := map[string]int64{}
		for k, v := range s.Errors {
			m[k] = int64(v)
		}
		c.addErrors(m)
	}
	c.elapsed += r.elapsed
	if c.extra == nil {
		c.extra = map[string]float64{}
	}
	c.extra["lease_renewals_late"] += float64(r.agent.LeaseRenewalsLate)
	c.extra["oversize_responses"] += float64(r.firmware.OversizeResponses)
	c.extra["chunked_responses"] += float64(r.firmware.ChunkedResponses)
	c.addUse(u, u.PeakRSS > 0)
}
