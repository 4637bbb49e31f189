package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/picogate/picogate/internal/sim"
)

// FleetReport is the fleet-scale run: picosim fleets through one picogate, in each mode and at
// several sizes, and the firmware fleet through the tuned nginx as the baseline.
type FleetReport struct {
	Date    time.Time  `json:"date"`
	Machine Machine    `json:"machine"`
	Rows    []FleetRow `json:"rows"`
	Goals   []Goal     `json:"goals,omitempty"`
}

// Where a fleet row's boards go.
const (
	viaPicogate = "picogate"
	viaNginx    = TargetNginxTuned
)

// FleetRow is one fleet: a mode and a size through picogate or nginx. Whole-run figures (errors in
// total, peak RSS, picosim's CPU) cover the ramp and the steady window; rates are over the steady
// window only, which starts when the boot ramp ends. Growth is per board added since the previous
// row of the same mode and proxy.
type FleetRow struct {
	Mode          string  `json:"mode"`
	Via           string  `json:"via"`
	Devices       int     `json:"devices"`
	RampSeconds   float64 `json:"ramp_seconds"`
	SteadySeconds float64 `json:"steady_seconds"`
	Seconds       float64 `json:"seconds"`

	// picosim's counts: every request and error of the run, split at the ramp's end.
	Requests        uint64            `json:"requests"`
	RPS             float64           `json:"fleet_requests_per_second"`
	ErrorCount      uint64            `json:"errors"`
	Errors          map[string]uint64 `json:"error_kinds,omitempty"`
	ErrorsRamp      map[string]uint64 `json:"errors_during_ramp,omitempty"`
	ErrorsAfterRamp map[string]uint64 `json:"errors_after_ramp,omitempty"`
	ErrorCountAfter uint64            `json:"errors_after_ramp_total"`
	DevicesReady    int               `json:"devices_ready"`
	LeaseRenewals   uint64            `json:"lease_renewals"`
	LeaseLate       uint64            `json:"lease_renewals_late"`

	// The API server's view of the fleet's Nodes (Ready=True), sampled every readyEvery after the
	// ramp: the fewest Ready in any sample, and Ready when the window ended.
	ReadyMin     int `json:"apiserver_ready_min_after_ramp"`
	ReadyEnd     int `json:"apiserver_ready_end"`
	ReadySamples int `json:"apiserver_ready_samples"`

	GatewayPeakRSS    int64   `json:"gateway_peak_rss_bytes"`
	GatewayCPUPercent float64 `json:"gateway_cpu_percent_of_one_core"`
	GatewayCPUPerReq  float64 `json:"gateway_cpu_us_per_request"`
	APIServerRPS      float64 `json:"apiserver_requests_per_second"`
	APIServerCPU      float64 `json:"apiserver_cpu_percent_of_one_core"`
	EtcdCPU           float64 `json:"etcd_cpu_percent_of_one_core"`
	// EtcdWALBytes is etcd's etcd_disk_wal_write_bytes_total delta over the steady window, EtcdPuts
	// its etcd_mvcc_put_total delta: what the fleet made etcd write.
	EtcdWALBytes float64 `json:"etcd_wal_bytes"`
	EtcdPuts     float64 `json:"etcd_puts"`
	// Per board and minute of the steady window: API server requests, its CPU in milliseconds, and
	// the bytes etcd wrote to its log.
	APIRequestsPerDeviceMinute float64 `json:"apiserver_requests_per_device_minute"`
	APICPUPerDeviceMinute      float64 `json:"apiserver_cpu_ms_per_device_minute"`
	EtcdBytesPerDeviceMinute   float64 `json:"etcd_bytes_per_device_minute"`
	// APFRejected is the API server's apiserver_flowcontrol_rejected_requests_total delta over the
	// whole run: requests its priority and fairness shed (429) rather than queue.
	APFRejected float64 `json:"apiserver_apf_rejected"`
	// SimCPU is picosim's own CPU over its life; BackgroundCPU what processes outside the bench used
	// in the steady window, both in percent of one core: the fleet competes with both for the machine.
	SimCPU        float64 `json:"picosim_cpu_percent_of_one_core"`
	BackgroundCPU float64 `json:"background_cpu_percent_of_one_core"`
	// GatewayRefusals tallies the gateway's access log over the whole run: its 429 and 5xx answers
	// by route and reason.
	GatewayRefusals map[string]int `json:"gateway_refusals,omitempty"`
	RSSPerDevice    float64        `json:"rss_growth_bytes_per_device,omitempty"`
	CPUPerDevice    float64        `json:"cpu_growth_percent_per_1000_devices,omitempty"`
}

// fleetRun is one row to run.
type fleetRun struct {
	mode, via string
	n         int
	steady    time.Duration
}

// fleetTail is how long picosim runs on after the steady window.
const fleetTail = 10 * time.Second

// readyEvery is how often the Ready sampler lists the fleet's Nodes after the ramp.
const readyEvery = 15 * time.Second

// Name prefixes of the fleets' boards: the registered devices (picogate) and the boards without a
// credential that go through nginx.
const (
	fleetPrefix    = "fleet-"
	baselinePrefix = "nginx-fleet-"
)

// fleetPlan lists the rows in the order they run: each mode at each size, smallest first, then
// the baseline sizes.
func (cfg *Config) fleetPlan() []fleetRun {
	sizes := slices.Sorted(slices.Values(cfg.Fleet))
	var plan []fleetRun
	for _, mode := range cfg.FleetModes {
		for _, n := range sizes {
			plan = append(plan, fleetRun{mode: mode, via: viaPicogate, n: n, steady: cfg.fleetSteady(mode)})
		}
	}
	for _, n := range slices.Sorted(slices.Values(cfg.FleetBaseline)) {
		plan = append(plan, fleetRun{mode: sim.ModeFirmware, via: viaNginx, n: n, steady: cfg.fleetSteady(sim.ModeFirmware)})
	}
	return plan
}

// runFleet registers the largest fleet once, then runs every row of the plan on a cleared cluster:
// for picogate, a fresh gateway in per-device mode exactly as a user runs it (default limits and
// features, access log on); for the baseline, nginx-tuned with the admin certificate.
func (b *Bench) runFleet(ctx context.Context, l *lab, rep *Report) error {
	cfg := &b.cfg
	plan := cfg.fleetPlan()
	if len(cfg.FleetModes) > 0 && len(cfg.Fleet) > 0 {
		most := slices.Max(cfg.Fleet)
		b.progress(fmt.Sprintf("registering %d fleet devices", most))
		if _, err := l.addDevices(ctx, fleetPrefix, most); err != nil {
			return err
		}
	}
	if err := l.seedFleetConfig(ctx); err != nil {
		return err
	}
	rep.collectVersions(ctx, l)
	fr := &FleetReport{Date: rep.Date, Machine: rep.Machine}
	for i, run := range plan {
		row, err := b.fleetRow(ctx, l, run, fmt.Sprintf("%d/%d", i+1, len(plan)))
		if err != nil {
			return fmt.Errorf("%s fleet of %d through %s: %w", run.mode, run.n, run.via, err)
		}
		fr.Rows = append(fr.Rows, row)
	}
	fr.finish()
	rep.Fleet = fr
	return nil
}

// finish fills the growth columns and the goals.
func (f *FleetReport) finish() {
	for i := range f.Rows {
		row := &f.Rows[i]
		for j := i - 1; j >= 0; j-- {
			prev := f.Rows[j]
			if prev.Mode != row.Mode || prev.Via != row.Via || prev.Devices >= row.Devices {
				continue
			}
			d := float64(row.Devices - prev.Devices)
			row.RSSPerDevice = float64(row.GatewayPeakRSS-prev.GatewayPeakRSS) / d
			row.CPUPerDevice = (row.GatewayCPUPercent - prev.GatewayCPUPercent) / d * 1000
			break
		}
	}
	f.Goals = evaluateFleetGoals(f)
}

func (b *Bench) fleetRow(ctx context.Context, l *lab, run fleetRun, step string) (_ FleetRow, err error) {
	cfg := &b.cfg
	name := fmt.Sprintf("%s-%s-%d", run.mode, run.via, run.n)
	say := func(s string) {
		b.progress(fmt.Sprintf("fleet %s (%s mode, %d boards through %s): %s", step, run.mode, run.n, run.via, s))
	}
	say("clearing earlier fleets' nodes and leases")
	if err := l.resetDevices(ctx); err != nil {
		return FleetRow{}, err
	}
	say("starting " + run.via)
	var t *target
	// picosim runs on past the window (fleetTail), so its boards are all still at work when the window
	// closes and the last Ready sample is taken.
	args := []string{"--mode", run.mode, "--ramp", cfg.FleetRamp.String(), "--duration", (cfg.FleetRamp + run.steady + fleetTail).String()}
	prefix := fleetPrefix
	if run.via == viaNginx {
		t, err = l.startTarget(ctx, TargetNginxTuned)
		args = append(args, "--names", baselinePrefix, "--count", strconv.Itoa(run.n))
		prefix = baselinePrefix
	} else {
		t, err = l.startFleetGateway(ctx, name)
		args = append(args, "--credentials", filepath.Join(l.dir, fleetPrefix+"credentials.json"), "--devices", strconv.Itoa(run.n))
	}
	if err != nil {
		return FleetRow{}, err
	}
	defer func() { err = errors.Join(err, t.stop()) }()
	report := filepath.Join(l.dir, "fleet-"+name+".json")
	args = append(args, "--gateway", "http://"+t.endpoint.Addr, "--report-json", report)

	whole := l.meter(t.pids)
	_, rejBefore, err := l.apiCounters(ctx)
	if err != nil {
		return FleetRow{}, err
	}
	whole.window(true)
	start := time.Now()
	sim, err := startChild("picosim", filepath.Join(l.dir, "fleet-"+name+".log"), append([]string{filepath.Join(cfg.BinDir, "picosim")}, args...)...)
	if err != nil {
		return FleetRow{}, err
	}
	stopSim := func(e error) error { return errors.Join(e, sim.stop(5*time.Second)) }
	if err := b.waitFleet(ctx, sim, start, start.Add(cfg.FleetRamp), func(d time.Duration) {
		say(fmt.Sprintf("ramp %s of %s", d.Round(time.Second), cfg.FleetRamp))
	}); err != nil {
		return FleetRow{}, stopSim(err)
	}

	// The steady window: from the ramp's end for run.steady, while picosim still runs.
	steady := l.meter(t.pids)
	apiBefore, _, err := l.apiCounters(ctx)
	if err != nil {
		return FleetRow{}, stopSim(err)
	}
	etcdBefore, err := l.etcdCounters(ctx)
	if err != nil {
		return FleetRow{}, stopSim(err)
	}
	steady.window(true)
	windowStart := time.Now()
	ready := readyTally{min: -1}
	nextSample := windowStart.Add(readyEvery)
	end := start.Add(cfg.FleetRamp + run.steady)
	for time.Now().Before(end) {
		until := end
		if nextSample.Before(end) {
			until = nextSample
		}
		if err := b.waitFleet(ctx, sim, windowStart, until, func(d time.Duration) {
			say(fmt.Sprintf("steady %s of %s, fewest Ready %s", d.Round(time.Second), run.steady, ready))
		}); err != nil {
			return FleetRow{}, stopSim(err)
		}
		if !until.Before(nextSample) && until.Before(end) {
			n, err := l.readyNodes(ctx, prefix)
			if err != nil {
				return FleetRow{}, stopSim(err)
			}
			ready.add(n)
			nextSample = nextSample.Add(readyEvery)
		}
	}
	steady.window(false)
	window := time.Since(windowStart)
	apiAfter, _, err := l.apiCounters(ctx)
	if err != nil {
		return FleetRow{}, stopSim(err)
	}
	etcdAfter, err := l.etcdCounters(ctx)
	if err != nil {
		return FleetRow{}, stopSim(err)
	}
	// The last sample, after the window so its cost is not in it: the lifecycle controller waits a
	// whole grace period before it marks a silent Node, so this still reads the window's end.
	n, err := l.readyNodes(ctx, prefix)
	if err != nil {
		return FleetRow{}, stopSim(err)
	}
	ready.add(n)

	say("waiting for picosim's report")
	select {
	case <-sim.done:
	case <-ctx.Done():
		return FleetRow{}, stopSim(ctx.Err())
	case <-time.After(fleetTail + 30*time.Second):
		return FleetRow{}, stopSim(fmt.Errorf("picosim still running 30s after its duration (%s)", sim.tail(5)))
	}
	elapsed := time.Since(start)
	whole.window(false)
	_, rejAfter, err := l.apiCounters(ctx)
	if err != nil {
		return FleetRow{}, err
	}
	// picosim has exited and been waited for: the kernel's account of its whole life.
	simCPU := sim.cmd.ProcessState.UserTime() + sim.cmd.ProcessState.SystemTime()
	sr, err := readSimReport(report)
	if err != nil {
		return FleetRow{}, fmt.Errorf("picosim report: %w (%s)", err, sim.tail(5))
	}
	u, wu := steady.used(), whole.used()
	row := FleetRow{Mode: run.mode, Via: run.via, Devices: run.n, RampSeconds: cfg.FleetRamp.Seconds(), SteadySeconds: window.Seconds(),
		Seconds: elapsed.Seconds(), Requests: sr.Requests, RPS: float64(sr.RequestsAfterRamp) / max(sr.DurationSeconds-sr.RampSeconds, 1e-3),
		Errors: sr.Errors, ErrorsRamp: sr.ErrorsDuringRamp, ErrorsAfterRamp: sr.ErrorsAfterRamp,
		DevicesReady: sr.DevicesReady, LeaseRenewals: sr.LeaseRenewals, LeaseLate: sr.LeaseRenewalsLate,
		ReadyMin: ready.min, ReadyEnd: ready.last, ReadySamples: ready.samples,
		GatewayPeakRSS: wu.PeakRSS, APFRejected: rejAfter - rejBefore, SimCPU: 100 * simCPU.Seconds() / elapsed.Seconds()}
	// picosim's requests after the ramp include its tail past the window: its rate times the window.
	row.measureWindow(u, window, apiAfter-apiBefore, etcdAfter.sub(etcdBefore), uint64(row.RPS*window.Seconds()))
	for _, v := range sr.Errors {
		row.ErrorCount += v
	}
	for _, v := range sr.ErrorsAfterRamp {
		row.ErrorCountAfter += v
	}
	if t.proc != nil && run.via == viaPicogate {
		if f, err := os.Open(t.proc.log); err == nil {
			row.GatewayRefusals, _ = refusals(f)
			f.Close()
		}
	}
	return row, nil
}

// measureWindow fills the steady window's rates from what it cost: u from /proc, the API server's
// request count, etcd's counters, and the requests picosim sent.
func (row *FleetRow) measureWindow(u usage, window time.Duration, apiRequests float64, etcd etcdCounters, fleetRequests uint64) {
	s := window.Seconds()
	if s <= 0 {
		return
	}
	row.GatewayCPUPercent = 100 * u.ProxyCPU.Seconds() / s
	row.APIServerRPS = apiRequests / s
	row.APIServerCPU = 100 * u.APICPU.Seconds() / s
	row.EtcdCPU = 100 * u.EtcdCPU.Seconds() / s
	row.BackgroundCPU = 100 * u.background().Seconds() / s
	row.EtcdWALBytes, row.EtcdPuts = etcd.walBytes, etcd.puts
	if fleetRequests > 0 {
		row.GatewayCPUPerReq = micros(u.ProxyCPU) / float64(fleetRequests)
	}
	deviceMinutes := float64(row.Devices) * window.Minutes()
	if deviceMinutes > 0 {
		row.APIRequestsPerDeviceMinute = apiRequests / deviceMinutes
		row.APICPUPerDeviceMinute = float64(u.APICPU.Milliseconds()) / deviceMinutes
		row.EtcdBytesPerDeviceMinute = etcd.walBytes / deviceMinutes
	}
}

// waitFleet waits until the deadline, reporting progress, and fails if picosim exits first or ctx ends.
func (b *Bench) waitFleet(ctx context.Context, sim *child, since, until time.Time, progress func(time.Duration)) error {
	for {
		left := time.Until(until)
		if left <= 0 {
			return nil
		}
		select {
		case <-sim.done:
			return fmt.Errorf("picosim ended early (%s)", sim.tail(5))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(left, time.Second)):
			if !b.cfg.ProgressLines || int(time.Since(since).Seconds())%15 == 0 {
				progress(time.Since(since))
			}
		}
	}
}

// readyTally keeps the Ready samples: the fewest, the last, and how many.
type readyTally struct{ min, last, samples int }

func (r *readyTally) add(n int) {
	if r.min < 0 || n < r.min {
		r.min = n
	}
	r.last = n
	r.samples++
}

func (r readyTally) String() string {
	if r.samples == 0 {
		return "–"
	}
	return strconv.Itoa(r.min)
}

// seedFleetConfig applies what the reference firmware reads besides its Node, as a user would
// (deploy/examples): ConfigMap default/pico-config and the Role letting every device get it. Without
// them each firmware board's ConfigMap GET is a 403 through picogate and a 404 through nginx.
func (l *lab) seedFleetConfig(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, filepath.Join(l.cfg.BinDir, "kubectl"), "--kubeconfig", l.cp.AdminKubeconfig(), "apply",
		"-f", filepath.Join(l.cfg.ExamplesDir, "pico-config.yaml"), "-f", filepath.Join(l.cfg.ExamplesDir, "fleet-config-rbac.yaml")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("applying the fleet's ConfigMap and its RBAC: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// startFleetGateway starts picogate in per-device mode with its default limits and features.
func (l *lab) startFleetGateway(ctx context.Context, name string) (*target, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	t := &target{name: "picogate-fleet", lab: l, perDevice: true, adminAddr: admin, endpoint: Endpoint{Addr: addr, Host: addr}}
	t.proc, err = startChild(t.name, filepath.Join(l.dir, "picogate-fleet-"+name+".log"), filepath.Join(l.cfg.BinDir, "picogate"),
		"serve", "--kubeconfig", l.cp.AdminKubeconfig(), "--listen", addr, "--admin-listen", admin)
	if err != nil {
		return nil, err
	}
	if err := t.proc.waitReady(ctx, 120*time.Second, l.answers(t)); err != nil {
		return nil, errors.Join(err, t.stop())
	}
	return t, nil
}
