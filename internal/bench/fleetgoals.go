package bench

import (
	"fmt"
	"math"
	"strings"

	"github.com/picogate/picogate/internal/sim"
)

// The fleet goals' sizes and limits.
const (
	fleetGoalSize    = 5000
	fleetStretchSize = 10000
	fleetRSSLimitMB  = 256
)

// evaluateFleetGoals reads the fleet goals off the rows: picogate's firmware fleet against the same
// fleet through nginx-tuned per board-minute, and what the goal's sizes managed. Reported, never
// asserted.
func evaluateFleetGoals(f *FleetReport) []Goal {
	find := func(mode, via string, n int) (FleetRow, bool) {
		for _, r := range f.Rows {
			if r.Mode == mode && r.Via == via && r.Devices == n && r.SteadySeconds > 0 {
				return r, true
			}
		}
		return FleetRow{}, false
	}
	goals := baselineGoals(f, find)
	goals = append(goals,
		readyGoal(fmt.Sprintf("%s reference-firmware boards through one gateway: all Ready after the ramp, 0 errors after it, gateway RSS ≤ %d MB", thousands(fleetGoalSize), fleetRSSLimitMB), sim.ModeFirmware, fleetGoalSize, find),
		readyGoal(fmt.Sprintf("agent mode, %s boards: 0 errors after the ramp, gateway RSS ≤ %d MB", thousands(fleetGoalSize), fleetRSSLimitMB), sim.ModeAgent, fleetGoalSize, find),
		readyGoal(fmt.Sprintf("stretch: %s reference-firmware boards, the same bar", thousands(fleetStretchSize)), sim.ModeFirmware, fleetStretchSize, find),
		readyGoal(fmt.Sprintf("stretch: agent mode, %s boards, the same bar", thousands(fleetStretchSize)), sim.ModeAgent, fleetStretchSize, find),
	)
	return goals
}

type fleetFinder func(mode, via string, n int) (FleetRow, bool)

// baselineGoals compares the largest baseline with picogate's firmware row of the same size.
func baselineGoals(f *FleetReport, find fleetFinder) []Goal {
	specs := []struct {
		what  string
		floor float64
		value func(FleetRow) float64
		unit  string
	}{
		{"fewer etcd bytes written", 5, func(r FleetRow) float64 { return r.EtcdBytesPerDeviceMinute }, "bytes"},
		{"less API server CPU", 3, func(r FleetRow) float64 { return r.APICPUPerDeviceMinute }, "ms"},
		{"fewer API server requests", 2, func(r FleetRow) float64 { return r.APIRequestsPerDeviceMinute }, "requests"},
	}
	n := 0
	for _, r := range f.Rows {
		if r.Via == viaNginx && r.SteadySeconds > 0 && r.Devices > n {
			if _, ok := find(sim.ModeFirmware, viaPicogate, r.Devices); ok {
				n = r.Devices
			}
		}
	}
	var goals []Goal
	for _, s := range specs {
		g := Goal{Goal: fmt.Sprintf("reference-firmware fleet vs the same through nginx-tuned, per board-minute over the steady window: ≥ %g× %s", s.floor, s.what),
			Status: goalNotMeasured}
		p, ok1 := find(sim.ModeFirmware, viaPicogate, n)
		b, ok2 := find(sim.ModeFirmware, viaNginx, n)
		if n == 0 || !ok1 || !ok2 {
			g.Detail = "needs a firmware fleet through picogate and a baseline of the same size in one run"
			goals = append(goals, g)
			continue
		}
		pv, bv := s.value(p), s.value(b)
		ratio := math.Inf(1)
		if pv > 0 {
			ratio = bv / pv
		}
		g.Detail = fmt.Sprintf("%s boards: %s vs %s %s (%s, %s)", thousands(n), figure(pv), figure(bv), s.unit, times(ratio), atLeast(ratio, s.floor))
		g.Status = status(ratio >= s.floor)
		goals = append(goals, g)
	}
	return goals
}

// readyGoal: the row of mode and n through picogate had every board Ready in every sample after the
// ramp (firmware mode; agent mode's bar is errors and memory only), no error after the ramp, and a
// gateway peak RSS within the limit. The detail gives what limits it when missed.
func readyGoal(goal, mode string, n int, find fleetFinder) Goal {
	g := Goal{Goal: goal, Status: goalNotMeasured}
	r, ok := find(mode, viaPicogate, n)
	if !ok {
		g.Detail = fmt.Sprintf("the fleet run did not include %s %s-mode boards through picogate", thousands(n), mode)
		return g
	}
	mb := float64(r.GatewayPeakRSS) / (1 << 20)
	var parts []string
	allReady := r.ReadyMin == n && r.ReadyEnd == n
	if mode == sim.ModeFirmware || !allReady {
		parts = append(parts, fmt.Sprintf("Ready (API server) fewest %d, at the end %d of %d", r.ReadyMin, r.ReadyEnd, n))
	}
	parts = append(parts, fmt.Sprintf("%d errors after the ramp%s", r.ErrorCountAfter, kinds(r.ErrorsAfterRamp)))
	rss := fmt.Sprintf("peak RSS %.0f MB", mb)
	if mb > fleetRSSLimitMB {
		rss += fmt.Sprintf(" (%.0f MB over)", mb-fleetRSSLimitMB)
	}
	parts = append(parts, rss, fmt.Sprintf("API server %.0f%%, gateway %.0f%%, etcd %.0f%% of a core", r.APIServerCPU, r.GatewayCPUPercent, r.EtcdCPU))
	g.Detail = strings.Join(parts, "; ")
	met := r.ErrorCountAfter == 0 && mb <= fleetRSSLimitMB
	if mode == sim.ModeFirmware {
		met = met && allReady
	}
	g.Status = status(met)
	return g
}

// kinds is " (kind: n, …)" for a non-empty error tally.
func kinds(m map[string]uint64) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// times prints a ratio: "5.2×", or "∞×" when the denominator was zero.
func times(r float64) string {
	if math.IsInf(r, 1) {
		return "∞×"
	}
	return fmt.Sprintf("%.1f×", r)
}

// figure prints a per-board-minute figure with sensible precision.
func figure(v float64) string {
	switch {
	case v >= 100:
		return thousands(int(math.Round(v)))
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// thousands prints n with a comma every three digits.
func thousands(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
