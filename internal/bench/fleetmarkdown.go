package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

func (f *FleetReport) markdown(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## Fleet scale\n\n")
	p("`make bench-fleet` (`picobench --fleet …`), run %s. Every row is a fresh fleet on a cleared cluster (the earlier\n", f.Date.Format("2006-01-02 15:04 MST"))
	p("rows' Nodes and Leases deleted): picosim's boards boot over a ramp (%s), their starts spread uniformly over it,\n", f.ramps())
	p("then the steady window is measured (%s).\n\n", f.windows())
	p("- *firmware* mode is the reference firmware's wire pattern: a new connection per request, a Node POST at boot, a\n")
	p("  status PATCH every 10 s, a ConfigMap GET every 30 s, no Lease. *agent* mode is the device package: its Node, a\n")
	p("  Lease every 10 s, status on change, a pod watch.\n")
	p("- *picogate* rows go through one `picogate serve` in per-device mode as a user runs it: default limits, heartbeat\n")
	p("  translation and the read cache on, access log on. The *nginx-tuned* rows are the baseline: the same firmware fleet\n")
	p("  through bench/nginx-tuned.conf, which forwards every request with the cluster admin's client certificate, so those\n")
	p("  boards carry no credential of their own.\n")
	p("- The window: with heartbeat translation a board's unchanged Node status is written upstream once per report interval\n")
	p("  (5 min), its Lease renewed in between. A window shorter than the interval would hide those writes, so the firmware\n")
	p("  window (and the baseline's) holds a whole interval. Agent boards write their own Lease every 10 s and status only on\n")
	p("  change, so a shorter window holds every kind of write many times over.\n")
	p("- kube-controller-manager runs with its node lifecycle controller (grace period 50 s), so a Node whose heartbeats\n")
	p("  stop turns Unknown. *Ready* is the API server's view: Nodes with Ready=True in a protobuf list served from its\n")
	p("  watch cache every %.0f s after the ramp and once at the end; *fewest* is the lowest sample. Those lists are in the\n", readyEvery.Seconds())
	p("  API server's figures, the same for every row.\n")
	p("- *Errors* are the boards' own (picosim's count), split at the ramp's end; the gateway's refusals are listed below.\n")
	p("- Per board-minute, over the steady window: *API req* is the delta of the API server's apiserver_request_total,\n")
	p("  *API CPU* its user+system CPU from /proc in milliseconds, *etcd bytes* the delta of etcd's own\n")
	p("  etcd_disk_wal_write_bytes_total (what it appended to its write-ahead log). They count all the cluster did in the\n")
	p("  window (the controller manager, the gateway's own watches), not only the boards' requests.\n")
	p("- CPU is in percent of one core, over the steady window; *gateway* is picogate, or nginx's master and worker on the\n")
	p("  baseline rows. *RSS* is the gateway's peak over the whole run.\n\n")

	p("| mode | via | boards | Ready: fewest / end | errors in the ramp | errors after it | API req/s | API CPU | etcd CPU | API req/board-min | API CPU ms/board-min | etcd bytes/board-min | gateway RSS | gateway CPU |\n")
	p("|---|---|--:|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range f.Rows {
		during, after := tally(r.ErrorsRamp), tally(r.ErrorsAfterRamp)
		if r.SteadySeconds == 0 { // a report from before the split
			during, after = tally(r.Errors)+" over the whole run", "–"
		}
		p("| %s | %s | %s | %s | %s | %s | %.0f | %.0f%% | %.0f%% | %s | %s | %s | %.0f MB | %.0f%% |\n",
			r.mode(), r.via(), thousands(r.Devices), r.readyText(), during, after,
			r.APIServerRPS, r.APIServerCPU, r.EtcdCPU, r.perMinute(r.APIRequestsPerDeviceMinute), r.perMinute(r.APICPUPerDeviceMinute),
			r.perMinute(r.EtcdBytesPerDeviceMinute), float64(r.GatewayPeakRSS)/(1<<20), r.GatewayCPUPercent)
	}
	p("\nMore of the same runs: *fleet req/s* is what the boards sent in the steady window, *gateway CPU/req* the gateway's CPU\n")
	p("per such request, *etcd puts* etcd's etcd_mvcc_put_total per board-minute, *APF 429s* the requests the API server's\n")
	p("priority and fairness shed over the whole run, *other CPU* what processes outside the bench used in the window; growth\n")
	p("is per board added since the previous row of the same mode and proxy.\n\n")
	p("| mode | via | boards | fleet req/s | gateway CPU/req | etcd puts/board-min | late lease renewals | APF 429s | picosim CPU | other CPU | RSS growth/board | CPU growth/1000 boards |\n")
	p("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range f.Rows {
		growth, cpu := "–", "–"
		if r.RSSPerDevice != 0 || r.CPUPerDevice != 0 {
			growth = fmt.Sprintf("%.1f KB", r.RSSPerDevice/1024)
			cpu = fmt.Sprintf("%.1f%%", r.CPUPerDevice)
		}
		late := "–"
		if r.mode() == "agent" {
			late = fmt.Sprintf("%d of %d", r.LeaseLate, r.LeaseRenewals)
		}
		puts := "–"
		if r.SteadySeconds > 0 {
			puts = figure(r.EtcdPuts / (float64(r.Devices) * r.SteadySeconds / 60))
		}
		p("| %s | %s | %s | %.0f | %.0f µs | %s | %s | %.0f | %.0f%% | %.0f%% | %s | %s |\n",
			r.mode(), r.via(), thousands(r.Devices), r.RPS, r.GatewayCPUPerReq, puts, late, r.APFRejected, r.SimCPU, r.BackgroundCPU, growth, cpu)
	}
	p("\n")
	if len(f.Goals) > 0 {
		p("### Fleet goals\n\nRead off the rows above, never asserted: one machine is noisy, and the point is how far off each is.\n\n")
		p("| goal | status | figures |\n|---|---|---|\n")
		for _, g := range f.Goals {
			p("| %s | **%s** | %s |\n", g.Goal, g.Status, g.Detail)
		}
		p("\n")
	}
	for _, r := range f.Rows {
		if len(r.GatewayRefusals) == 0 {
			continue
		}
		p("Refusals of the %s-mode fleet of %s boards, from the gateway's access log over the whole run (status, route: reason):\n\n", r.mode(), thousands(r.Devices))
		keys := sortedKeys(r.GatewayRefusals)
		slices.SortStableFunc(keys, func(a, b string) int { return r.GatewayRefusals[b] - r.GatewayRefusals[a] })
		for i, k := range keys {
			if i == 8 {
				p("- … and %d more kinds\n", len(keys)-i)
				break
			}
			p("- %d × %s\n", r.GatewayRefusals[k], k)
		}
		p("\n")
	}
}

// ramps and windows describe the rows' ramp and steady windows, by mode and proxy.
func (f *FleetReport) ramps() string {
	return f.describe(func(r FleetRow) float64 { return r.RampSeconds })
}

func (f *FleetReport) windows() string {
	return f.describe(func(r FleetRow) float64 { return r.SteadySeconds })
}

// describe is "60 s" when every row has the same figure, else "firmware 330 s, agent 120 s, …" by
// kind of row (the steady window is measured, so rounded to the second).
func (f *FleetReport) describe(v func(FleetRow) float64) string {
	var kinds, vals []string
	seen := map[string]bool{}
	for _, r := range f.Rows {
		k := r.mode()
		if r.via() != viaPicogate {
			k = "the " + r.via() + " baseline"
		}
		d := time.Duration(v(r) * float64(time.Second)).Round(time.Second).String()
		if seen[k] {
			continue
		}
		seen[k] = true
		kinds, vals = append(kinds, k), append(vals, d)
	}
	if len(vals) == 0 {
		return "–"
	}
	if len(slices.Compact(slices.Clone(vals))) == 1 {
		return vals[0]
	}
	var parts []string
	for i := range kinds {
		parts = append(parts, kinds[i]+" "+vals[i])
	}
	return strings.Join(parts, ", ")
}

// mode and via read a row of a report from before modes and the baseline as agent mode through
// picogate, which is all that report ran.
func (r FleetRow) mode() string {
	if r.Mode == "" {
		return "agent"
	}
	return r.Mode
}

func (r FleetRow) via() string {
	if r.Via == "" {
		return viaPicogate
	}
	return r.Via
}

func (r FleetRow) readyText() string {
	if r.ReadySamples == 0 {
		return fmt.Sprintf("– / %s (picosim)", thousands(r.DevicesReady))
	}
	return thousands(r.ReadyMin) + " / " + thousands(r.ReadyEnd)
}

// perMinute prints a per-board-minute figure, "–" for a row without a steady window.
func (r FleetRow) perMinute(v float64) string {
	if r.SteadySeconds == 0 {
		return "–"
	}
	return figure(v)
}

// tally is "0" or "N (kind: n, …)".
func tally(m map[string]uint64) string {
	var n uint64
	for _, v := range m {
		n += v
	}
	if n == 0 {
		return "0"
	}
	return fmt.Sprint(n) + kinds(m)
}
