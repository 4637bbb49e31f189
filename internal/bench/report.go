package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Report is docs/benchmarks.json. The targets run and the fleet run each replace their own part and
// keep the other's, so the two modes can run separately.
type Report struct {
	Date     time.Time     `json:"date"`
	Machine  Machine       `json:"machine"`
	Settings Settings      `json:"settings"`
	Results  []Result      `json:"results"`
	Goals    []Goal        `json:"goals"`
	Fleet    *FleetReport  `json:"fleet,omitempty"`
	Profiles []ProfileNote `json:"profiles,omitempty"`
	// Handler is what picogate's request path allocates per request (go test -bench on the handler).
	Handler []HandlerCost `json:"handler,omitempty"`
	// Notes are Config.NotesFile's text: what each change did to the cost per request, measured apart.
	Notes string `json:"-"`
}

// Machine is where the numbers were taken.
type Machine struct {
	Cores     int    `json:"cores"`
	CPUModel  string `json:"cpu_model"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	Nginx     string `json:"nginx,omitempty"`
	APIServer string `json:"kube_apiserver,omitempty"`
	Picogate  string `json:"picogate,omitempty"`
}

// Settings are the run's parameters.
type Settings struct {
	Rounds          int     `json:"rounds"`
	DurationSeconds float64 `json:"duration_seconds"`
	WarmupSeconds   float64 `json:"warmup_seconds"`
	Conns           int     `json:"conns"`
	Watchers        int     `json:"watchers"`
	WatchRepeats    int     `json:"watch_repeats_per_round"`
	MixDevices      int     `json:"mix_devices"`
	MixSeconds      float64 `json:"mix_seconds"`
	Quick           bool    `json:"quick,omitempty"`
	// LoadAverage is /proc/loadavg's 1-minute figure when the run started and ended.
	LoadAverage [2]float64 `json:"load_average_start_end"`
}

// Result is one target × workload over all rounds. Latencies and CPU times are in microseconds.
// For the watch workload a "request" is one change, its latency the time until every watcher had the
// event, and CPU is per event delivered. ProxyCPU is absent for direct HTTPS (there is no proxy).
type Result struct {
	Target      string             `json:"target"`
	Workload    string             `json:"workload"`
	Skipped     string             `json:"skipped,omitempty"`
	Requests    int64              `json:"requests"`
	ErrorCount  int64              `json:"errors"`
	Errors      map[string]int64   `json:"error_kinds,omitempty"`
	Seconds     float64            `json:"seconds"`
	RPS         float64            `json:"requests_per_second"`
	Samples     int                `json:"latency_samples"`
	P50         float64            `json:"p50_us"`
	P99         float64            `json:"p99_us"`
	P999        float64            `json:"p999_us"`
	ProxyCPU    *float64           `json:"proxy_cpu_us_per_request,omitempty"`
	APICPU      float64            `json:"apiserver_cpu_us_per_request"`
	ClientCPU   float64            `json:"loadgen_cpu_us_per_request"`
	PeakRSS     int64              `json:"proxy_peak_rss_bytes,omitempty"`
	BytesPerReq float64            `json:"response_bytes_per_request"`
	RPSRatio    *float64           `json:"rps_ratio_to_tuned_nginx,omitempty"`
	CPURatio    *float64           `json:"cpu_ratio_to_tuned_nginx,omitempty"`
	Extra       map[string]float64 `json:"extra,omitempty"`
	// BackgroundCPU is the share of the machine (percent of all cores) used by processes outside the
	// bench during this row's windows: other work on the machine, the noise in its figures. For the
	// fleet mix it includes picosim.
	BackgroundCPU float64 `json:"background_cpu_percent"`
}

// Goal is one of picogate's performance goals and how this run did against it.
type Goal struct {
	Goal   string `json:"goal"`
	Status string `json:"status"` // met, missed, not measured
	Detail string `json:"detail"`
}

// ProfileNote records a CPU profile fetched during the run.
type ProfileNote struct {
	Target string   `json:"target"`
	File   string   `json:"file"`
	Note   string   `json:"note"`
	Top    []string `json:"top,omitempty"` // go tool pprof -top, abridged
}

func newReport(cfg *Config, began time.Time) *Report {
	return &Report{
		Date:    began.UTC().Truncate(time.Second),
		Machine: machine(),
		Settings: Settings{Rounds: cfg.Rounds, DurationSeconds: cfg.Duration.Seconds(), WarmupSeconds: cfg.Warmup.Seconds(),
			Conns: cfg.Conns, Watchers: cfg.Watchers, WatchRepeats: cfg.WatchRepeats, MixDevices: cfg.MixDevices,
			MixSeconds: cfg.MixDuration.Seconds(), Quick: cfg.Quick, LoadAverage: [2]float64{loadAvg(), 0}},
	}
}

// loadAvg is the 1-minute load average, 0 if unknown.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuModel(b)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel(cpuinfo []byte) string {
	for line := range strings.SplitSeq(string(cpuinfo), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// collectVersions notes the versions of what was measured.
func (r *Report) collectVersions(ctx context.Context, l *lab) {
	if out, err := exec.CommandContext(ctx, l.cfg.Nginx, "-v").CombinedOutput(); err == nil {
		r.Machine.Nginx = strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
	}
	if v, err := l.admin.Discovery().ServerVersion(); err == nil {
		r.Machine.APIServer = v.GitVersion
	}
	// Built from the module proxy, kube-apiserver has no version stamped in; the tools module says which.
	if strings.HasPrefix(r.Machine.APIServer, "v0.0.0") || r.Machine.APIServer == "" {
		if b, err := os.ReadFile(filepath.Join(l.cfg.BinDir, "..", "tools", "controlplane", "go.mod")); err == nil {
			r.Machine.APIServer = moduleVersion(b, "k8s.io/kubernetes")
		}
	}
	if out, err := exec.CommandContext(ctx, filepath.Join(l.cfg.BinDir, "picogate"), "version").Output(); err == nil {
		r.Machine.Picogate = strings.TrimPrefix(strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]), "picogate ")
	}
}

// moduleVersion finds "module vX" in a go.mod's require lines.
func moduleVersion(gomod []byte, module string) string {
	for line := range strings.SplitSeq(string(gomod), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == module && strings.HasPrefix(f[1], "v") {
			return f[1]
		}
	}
	return ""
}

// finish computes the ratios to the tuned nginx and the goals.
func (r *Report) finish() {
	base := map[string]Result{}
	for _, res := range r.Results {
		if res.Target == baseline {
			base[res.Workload] = res
		}
	}
	for i := range r.Results {
		res := &r.Results[i]
		b, ok := base[res.Workload]
		if !ok || res.Skipped != "" {
			continue
		}
		if b.RPS > 0 && res.RPS > 0 {
			v := res.RPS / b.RPS
			res.RPSRatio = &v
		}
		if b.ProxyCPU != nil && res.ProxyCPU != nil && *b.ProxyCPU > 0 {
			v := *res.ProxyCPU / *b.ProxyCPU
			res.CPURatio = &v
		}
	}
	r.Goals = evaluateGoals(r)
}

// write writes benchmarks.json and benchmarks.md in dir, keeping the part of an existing report that
// this run did not measure (the fleet table for a targets run, the targets tables for a fleet run).
func (r *Report) write(dir string, fleetRun bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	jsonPath := filepath.Join(dir, "benchmarks.json")
	var old Report
	if b, err := os.ReadFile(jsonPath); err == nil {
		if err := json.Unmarshal(b, &old); err != nil {
			return fmt.Errorf("reading the previous %s: %w", jsonPath, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading the previous report: %w", err)
	}
	if fleetRun {
		fleet := r.Fleet
		*r = old
		r.Fleet = fleet
		if r.Date.IsZero() {
			r.Date, r.Machine = fleet.Date, fleet.Machine
		}
	} else {
		r.Fleet = old.Fleet
	}
	r.Goals = evaluateGoals(r)
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the report: %w", err)
	}
	if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	var md bytes.Buffer
	r.Markdown(&md)
	if err := os.WriteFile(filepath.Join(dir, "benchmarks.md"), md.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}
