package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FleetReport is the fleet-scale run: picosim agents through one picogate, at several sizes.
type FleetReport struct {
	Date    time.Time  `json:"date"`
	Machine Machine    `json:"machine"`
	Mode    string     `json:"mode"`
	Seconds float64    `json:"seconds_per_size"`
	Rows    []FleetRow `json:"rows"`
}

// FleetRow is one fleet size. Growth is per device added since the previous row.
type FleetRow struct {
	Devices           int               `json:"devices"`
	Seconds           float64           `json:"seconds"`
	Requests          uint64            `json:"requests"`
	RPS               float64           `json:"fleet_requests_per_second"`
	ErrorCount        uint64            `json:"errors"`
	Errors            map[string]uint64 `json:"error_kinds,omitempty"`
	DevicesReady      int               `json:"devices_ready"`
	LeaseRenewals     uint64            `json:"lease_renewals"`
	LeaseLate         uint64            `json:"lease_renewals_late"`
	GatewayPeakRSS    int64             `json:"gateway_peak_rss_bytes"`
	GatewayCPUPercent float64           `json:"gateway_cpu_percent_of_one_core"`
	GatewayCPUPerReq  float64           `json:"gateway_cpu_us_per_request"`
	APIServerRPS      float64           `json:"apiserver_requests_per_second"`
	APIServerCPU      float64           `json:"apiserver_cpu_percent_of_one_core"`
	// APFRejected is the API server's apiserver_flowcontrol_rejected_requests_total delta: requests its
	// priority and fairness shed (429) rather than queue.
	APFRejected float64 `json:"apiserver_apf_rejected"`
	// SimCPU is picosim's own CPU; BackgroundCPU what processes outside the bench used, both in percent
	// of one core: the fleet competes with both for the machine.
	SimCPU        float64 `json:"picosim_cpu_percent_of_one_core"`
	BackgroundCPU float64 `json:"background_cpu_percent_of_one_core"`
	// GatewayRefusals tallies the gateway's access log: its 429 and 5xx answers by route and reason.
	GatewayRefusals map[string]int `json:"gateway_refusals,omitempty"`
	RSSPerDevice    float64        `json:"rss_growth_bytes_per_device,omitempty"`
	CPUPerDevice    float64        `json:"cpu_growth_percent_per_1000_devices,omitempty"`
}

const fleetMode = "agent"

// runFleet registers the largest fleet once, then for each size starts a fresh gateway in per-device
// mode, exactly as a user runs it (default rate limits, access log on), and runs picosim's agents
// through it for FleetDuration.
func (b *Bench) runFleet(ctx context.Context, l *lab, rep *Report) error {
	cfg := &b.cfg
	sizes := slices.Clone(cfg.Fleet)
	slices.Sort(sizes)
	b.progress(fmt.Sprintf("registering %d fleet devices", sizes[len(sizes)-1]))
	if _, err := l.addDevices(ctx, "fleet-", sizes[len(sizes)-1]); err != nil {
		return err
	}
	rep.collectVersions(ctx, l)
	fr := &FleetReport{Date: rep.Date, Machine: rep.Machine, Mode: fleetMode, Seconds: cfg.FleetDuration.Seconds()}
	for _, n := range sizes {
		row, err := b.fleetSize(ctx, l, n)
		if err != nil {
			return fmt.Errorf("fleet of %d: %w", n, err)
		}
		if k := len(fr.Rows); k > 0 {
			prev := fr.Rows[k-1]
			d := float64(n - prev.Devices)
			row.RSSPerDevice = float64(row.GatewayPeakRSS-prev.GatewayPeakRSS) / d
			row.CPUPerDevice = (row.GatewayCPUPercent - prev.GatewayCPUPercent) / d * 1000
		}
		fr.Rows = append(fr.Rows, row)
	}
	rep.Fleet = fr
	return nil
}

func (b *Bench) fleetSize(ctx context.Context, l *lab, n int) (_ FleetRow, err error) {
	cfg := &b.cfg
	b.progress(fmt.Sprintf("fleet of %d: clearing earlier sizes' nodes and leases", n))
	if err := l.resetDevices(ctx); err != nil {
		return FleetRow{}, err
	}
	b.progress(fmt.Sprintf("fleet of %d: starting the gateway", n))
	gw, err := l.startFleetGateway(ctx, n)
	if err != nil {
		return FleetRow{}, err
	}
	defer func() { err = errors.Join(err, gw.stop()) }()
	m := l.meter(gw.pids)
	before, rejBefore, err := l.apiCounters(ctx)
	if err != nil {
		return FleetRow{}, err
	}
	report := filepath.Join(l.dir, "fleet-"+strconv.Itoa(n)+".json")
	m.window(true)
	start := time.Now()
	sim, err := startChild("picosim", filepath.Join(l.dir, "fleet-"+strconv.Itoa(n)+".log"), filepath.Join(cfg.BinDir, "picosim"),
		"--gateway", "http://"+gw.endpoint.Addr, "--credentials", filepath.Join(l.dir, "fleet-credentials.json"),
		"--devices", strconv.Itoa(n), "--mode", fleetMode, "--duration", cfg.FleetDuration.String(), "--report-json", report)
	if err != nil {
		return FleetRow{}, err
	}
	for done := false; !done; {
		select {
		case <-sim.done:
			done = true
		case <-ctx.Done():
			return FleetRow{}, errors.Join(ctx.Err(), sim.stop(5*time.Second))
		case <-time.After(time.Second):
			if cfg.ProgressLines && int(time.Since(start).Seconds())%15 != 0 {
				continue
			}
			b.progress(fmt.Sprintf("fleet of %d: %s of %s", n, time.Since(start).Round(time.Second), cfg.FleetDuration))
		}
	}
	elapsed := time.Since(start)
	m.window(false)
	// picosim has exited and been waited for: the kernel's account of its whole life.
	simCPU := sim.cmd.ProcessState.UserTime() + sim.cmd.ProcessState.SystemTime()
	after, rejAfter, err := l.apiCounters(ctx)
	if err != nil {
		return FleetRow{}, err
	}
	sr, err := readSimReport(report)
	if err != nil {
		return FleetRow{}, fmt.Errorf("picosim report: %w (%s)", err, sim.tail(5))
	}
	u := m.used()
	row := FleetRow{Devices: n, Seconds: elapsed.Seconds(), Requests: sr.Requests, RPS: float64(sr.Requests) / elapsed.Seconds(),
		Errors: sr.Errors, DevicesReady: sr.DevicesReady, LeaseRenewals: sr.LeaseRenewals, LeaseLate: sr.LeaseRenewalsLate,
		GatewayPeakRSS: u.PeakRSS, GatewayCPUPercent: 100 * u.ProxyCPU.Seconds() / elapsed.Seconds(),
		APIServerRPS: (after - before) / elapsed.Seconds(), APIServerCPU: 100 * u.APICPU.Seconds() / elapsed.Seconds(),
		APFRejected: rejAfter - rejBefore, SimCPU: 100 * simCPU.Seconds() / elapsed.Seconds(),
		BackgroundCPU: 100 * max(u.background()-simCPU, 0).Seconds() / elapsed.Seconds()}
	for _, v := range sr.Errors {
		row.ErrorCount += v
	}
	if f, err := os.Open(gw.proc.log); err == nil {
		row.GatewayRefusals, _ = refusals(f)
		f.Close()
	}
	if sr.Requests > 0 {
		row.GatewayCPUPerReq = micros(u.ProxyCPU) / float64(sr.Requests)
	}
	return row, nil
}

// startFleetGateway starts picogate in per-device mode with its default limits.
func (l *lab) startFleetGateway(ctx context.Context, n int) (*target, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	t := &target{name: "picogate-fleet", lab: l, perDevice: true, adminAddr: admin, endpoint: Endpoint{Addr: addr, Host: addr}}
	t.proc, err = startChild(t.name, filepath.Join(l.dir, "picogate-fleet-"+strconv.Itoa(n)+".log"), filepath.Join(l.cfg.BinDir, "picogate"),
		"serve", "--kubeconfig", l.cp.AdminKubeconfig(), "--listen", addr, "--admin-listen", admin)
	if err != nil {
		return nil, err
	}
	if err := t.proc.waitReady(ctx, 120*time.Second, l.answers(t)); err != nil {
		return nil, errors.Join(err, t.stop())
	}
	return t, nil
}

// apiCounters reads the API server's apiserver_request_total and
// apiserver_flowcontrol_rejected_requests_total, each summed over every label, with the admin's client.
func (l *lab) apiCounters(ctx context.Context) (requests, rejected float64, err error) {
	raw, err := l.admin.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the API server's metrics: %w", err)
	}
	if requests, err = sumCounter(string(raw), "apiserver_request_total"); err != nil {
		return 0, 0, err
	}
	rejected, err = sumCounter(string(raw), "apiserver_flowcontrol_rejected_requests_total")
	return requests, rejected, err
}

// sumCounter adds up every sample of the metric name in Prometheus text exposition.
func sumCounter(text, name string) (float64, error) {
	var total float64
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		if rest != "" && rest[0] == '{' {
			rest = rest[strings.LastIndexByte(rest, '}')+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, fmt.Errorf("metric line %q: no value", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		total += v
	}
	return total, sc.Err()
}
