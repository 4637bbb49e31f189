package bench

import "fmt"

const (
	goalMet         = "met"
	goalMissed      = "missed"
	goalNotMeasured = "not measured"
)

// evaluateGoals reads picogate's performance goals off the report. They are reported, never asserted: one machine
// is noisy, and the point is to show how far off each one is.
func evaluateGoals(r *Report) []Goal {
	find := func(target, workload string) (Result, bool) {
		for _, res := range r.Results {
			if res.Target == target && res.Workload == workload && res.Skipped == "" && res.Requests > 0 {
				return res, true
			}
		}
		return Result{}, false
	}
	var goals []Goal
	for _, w := range []string{WorkloadGet, WorkloadPatch, WorkloadGetClose, WorkloadPatchClose} {
		goals = append(goals, perDeviceGoal(w, find))
	}
	for _, w := range []string{WorkloadPatchClose, WorkloadGetClose} {
		goals = append(goals, firmwareGoal(w, find))
	}
	goals = append(goals, watchGoal(find))
	return goals
}

type finder func(target, workload string) (Result, bool)

func perDeviceGoal(w string, find finder) Goal {
	g := Goal{Goal: fmt.Sprintf("%s: picogate per-device req/s ≥ tuned nginx and proxy CPU/request ≤ 1.5× tuned nginx (stretch: ≤ 1×)", w), Status: goalNotMeasured}
	p, ok1 := find(TargetToken, w)
	n, ok2 := find(TargetNginxTuned, w)
	if !ok1 || !ok2 || p.ProxyCPU == nil || n.ProxyCPU == nil {
		g.Detail = "needs picogate-token and nginx-tuned in the same run"
		return g
	}
	if *n.ProxyCPU == 0 {
		g.Detail = "nginx-tuned used less CPU than /proc's tick resolves"
		return g
	}
	rps, cpu := p.RPS/n.RPS, *p.ProxyCPU / *n.ProxyCPU
	g.Detail = fmt.Sprintf("req/s %.0f vs %.0f (%.2f×, %s); CPU/request %.0f µs vs %.0f µs (%.2f×, %s; stretch %s)",
		p.RPS, n.RPS, rps, atLeast(rps, 1), *p.ProxyCPU, *n.ProxyCPU, cpu, atMost(cpu, 1.5), atMost(cpu, 1))
	g.Status = status(rps >= 1 && cpu <= 1.5)
	return g
}

func firmwareGoal(w string, find finder) Goal {
	g := Goal{Goal: fmt.Sprintf("%s (the firmware's pattern): picogate per-device req/s ≥ 3× the original design's nginx", w), Status: goalNotMeasured}
	p, ok1 := find(TargetToken, w)
	s, ok2 := find(TargetNginxSeed, w)
	if !ok1 || !ok2 {
		g.Detail = "needs picogate-token and nginx-seed in the same run"
		return g
	}
	ratio := p.RPS / s.RPS
	g.Detail = fmt.Sprintf("req/s %.0f vs %.0f: %.2f× (%s)", p.RPS, s.RPS, ratio, atLeast(ratio, 3))
	g.Status = status(ratio >= 3)
	return g
}

func watchGoal(find finder) Goal {
	g := Goal{Goal: "watch fan-out: picogate per-device p99 ≤ direct + 5 ms", Status: goalNotMeasured}
	p, ok1 := find(TargetToken, WorkloadWatch)
	d, ok2 := find(TargetDirect, WorkloadWatch)
	if !ok1 || !ok2 {
		g.Detail = "needs picogate-token and direct in the same run"
		return g
	}
	over := (p.P99 - d.P99) / 1000
	g.Detail = fmt.Sprintf("p99 %.1f ms vs direct %.1f ms: %+.1f ms (limit +5 ms)", p.P99/1000, d.P99/1000, over)
	if over > 5 {
		g.Detail += fmt.Sprintf(", missed by %.1f ms", over-5)
	}
	g.Status = status(over <= 5)
	return g
}

func status(ok bool) string {
	if ok {
		return goalMet
	}
	return goalMissed
}

// atLeast describes ratio against a floor: "met" or "missed by N%".
func atLeast(ratio, floor float64) string {
	if ratio >= floor {
		return "met"
	}
	return "missed by " + percent((1-ratio/floor)*100)
}

// atMost describes ratio against a ceiling.
func atMost(ratio, ceiling float64) string {
	if ratio <= ceiling {
		return "met"
	}
	return "missed by " + percent((ratio/ceiling-1)*100)
}

// percent prints a shortfall: whole percent, or one decimal below 1% (so a miss never reads "0%").
func percent(p float64) string {
	if p < 1 {
		return fmt.Sprintf("%.1f%%", p)
	}
	return fmt.Sprintf("%.0f%%", p)
}
