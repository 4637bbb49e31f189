package bench

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/picogate/picogate/internal/sim"
)

// Config is one bench run. The zero value, given BinDir's default, runs every target and workload
// with the defaults below and writes docs/benchmarks.{json,md}.
type Config struct {
	// BinDir holds the control plane, kubectl, picogate and picosim. Default "bin".
	BinDir string
	// NginxConfDir holds nginx-seed.conf and nginx-tuned.conf. Default "bench".
	NginxConfDir string
	// Nginx is the nginx binary. Default: nginx on $PATH, else /usr/sbin/nginx.
	Nginx string
	// ExamplesDir holds pico-config.yaml and fleet-config-rbac.yaml, which a fleet run applies: the
	// ConfigMap the reference firmware reads and the RBAC that lets devices read it. Default
	// "deploy/examples".
	ExamplesDir string
	// OutDir receives benchmarks.json and benchmarks.md. Default "docs".
	OutDir string
	// WorkDir is the run folder (control plane, configs, logs); default a new folder under tmp/,
	// removed at the end unless KeepWorkDir.
	WorkDir     string
	KeepWorkDir bool

	// Targets and Workloads to run, by name (see AllTargets, AllWorkloads). Default all.
	Targets, Workloads []string
	// Rounds: each round runs every target once per workload, A B C … A B C …, so slow drift of the
	// machine spreads over all targets alike. Default 3.
	Rounds int
	// Duration of a load workload's measured window per round, after Warmup. Default 5s, warm-up 500ms.
	Duration, Warmup time.Duration
	// Conns is the number of concurrent load connections (and of bench devices). Default 16.
	Conns int
	// Quick shortens a run for a first look: 2 rounds of 3s, 300ms warm-up, fewer watch repeats and a
	// shorter fleet mix, unless those are set explicitly.
	Quick bool

	// Watchers on the one object in the fan-out workload (default 100) and changes timed per round
	// (default 30).
	Watchers, WatchRepeats int
	// MixDevices run by picosim in the fleet-mix workload, half agents and half firmware (default 200),
	// for MixDuration per round (default 20s).
	MixDevices  int
	MixDuration time.Duration

	// Fleet, when set, runs the fleet-scale mode instead: picosim with each of these board counts
	// through one picogate, in each of FleetModes (default firmware then agent; "none" runs only
	// the baseline). FleetBaseline are the sizes of the firmware fleet run through nginx-tuned
	// instead, the baseline of the API server's and etcd's load; none when empty.
	Fleet         []int
	FleetModes    []string
	FleetBaseline []int
	// FleetRamp is the boot ramp: board starts spread uniformly over it (default 60s; --quick 10s).
	// FleetSteady is the measured window after it. Default 5m30s in firmware mode and for the
	// baseline, so the window holds a whole heartbeat-translation report interval (5 min: a board's
	// full Node status is written at least that often, and a shorter window would miss those
	// writes); 2m in agent mode, whose boards write their own Lease every 10 s and status only on
	// change, so every kind of write recurs well within it. --quick: 40s for all.
	FleetRamp, FleetSteady time.Duration

	// Handler runs the gateway's handler benchmarks (go test -bench -benchmem, from the repository root)
	// for the allocations per request.
	Handler bool
	// NotesFile is markdown shown in the report under "Cost per request, change by change": figures
	// measured apart from this run (instruction counts, allocations). Default bench/cost-per-request.md;
	// none if missing.
	NotesFile string

	// CompareBin, when set, is another build of picogate, run as the target picogate-token-before beside
	// the others, so one interleaved run shows what a change did.
	CompareBin string

	// CPUProfile, when set, starts the picogate targets with --profiling (when the binary has it) and
	// fetches a CPU profile of each during an extra, unreported GET window into this folder.
	CPUProfile string

	// Progress receives a one-line progress report, rewritten in place on a terminal; with
	// ProgressLines, one line per step instead (a log file). Default discard.
	Progress      io.Writer
	ProgressLines bool
	// Logger receives setup messages. Default discard.
	Logger *slog.Logger

	proc *Proc
}

func (cfg Config) withDefaults() Config {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	defInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&cfg.BinDir, "bin")
	def(&cfg.NginxConfDir, "bench")
	def(&cfg.OutDir, "docs")
	def(&cfg.ExamplesDir, "deploy/examples")
	def(&cfg.NotesFile, "bench/cost-per-request.md")
	if cfg.Nginx == "" {
		cfg.Nginx = "/usr/sbin/nginx"
		if p, err := exec.LookPath("nginx"); err == nil {
			cfg.Nginx = p
		}
	}
	if len(cfg.Targets) == 0 {
		cfg.Targets = AllTargets
		if cfg.CompareBin != "" {
			cfg.Targets = append(slices.Clone(AllTargets), TargetTokenBefore)
		}
	}
	if len(cfg.Workloads) == 0 {
		cfg.Workloads = AllWorkloads
	}
	if cfg.Quick {
		defInt(&cfg.Rounds, 2)
		defDur(&cfg.Duration, 3*time.Second)
		defDur(&cfg.Warmup, 300*time.Millisecond)
		defInt(&cfg.WatchRepeats, 10)
		defDur(&cfg.MixDuration, 10*time.Second)
		defDur(&cfg.FleetRamp, 10*time.Second)
		defDur(&cfg.FleetSteady, 40*time.Second)
	}
	defInt(&cfg.Rounds, 3)
	defDur(&cfg.Duration, 5*time.Second)
	defDur(&cfg.Warmup, 500*time.Millisecond)
	defInt(&cfg.Conns, 16)
	defInt(&cfg.Watchers, 100)
	defInt(&cfg.WatchRepeats, 30)
	defInt(&cfg.MixDevices, 200)
	defDur(&cfg.MixDuration, 20*time.Second)
	defDur(&cfg.FleetRamp, 60*time.Second)
	if len(cfg.FleetModes) == 0 {
		cfg.FleetModes = []string{sim.ModeFirmware, sim.ModeAgent}
	}
	if slices.Equal(cfg.FleetModes, []string{"none"}) {
		cfg.FleetModes = nil
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// validate reports every problem with a defaulted cfg at once.
func (cfg Config) validate() error {
	var errs []error
	for _, t := range cfg.Targets {
		switch {
		case t == TargetTokenBefore && cfg.CompareBin == "":
			errs = append(errs, fmt.Errorf("target %s needs --compare-bin", t))
		case t != TargetTokenBefore && t != TargetShared && !slices.Contains(AllTargets, t):
			errs = append(errs, fmt.Errorf("target %q: want one of %v", t, AllTargets))
		}
	}
	if cfg.CompareBin != "" && !executable(cfg.CompareBin) {
		errs = append(errs, fmt.Errorf("--compare-bin %s: not an executable", cfg.CompareBin))
	}
	for _, w := range cfg.Workloads {
		if !slices.Contains(AllWorkloads, w) {
			errs = append(errs, fmt.Errorf("workload %q: want one of %v", w, AllWorkloads))
		}
	}
	if cfg.Rounds < 1 || cfg.Conns < 1 || cfg.Watchers < 1 || cfg.WatchRepeats < 1 || cfg.MixDevices < 2 {
		errs = append(errs, fmt.Errorf("rounds %d, conns %d, watchers %d, watch repeats %d: want at least 1; mix devices %d: at least 2",
			cfg.Rounds, cfg.Conns, cfg.Watchers, cfg.WatchRepeats, cfg.MixDevices))
	}
	if cfg.Duration <= 0 || cfg.Warmup < 0 || cfg.MixDuration <= 0 || cfg.FleetRamp <= 0 || cfg.FleetSteady < 0 {
		errs = append(errs, fmt.Errorf("duration %s, warm-up %s, mix %s, fleet ramp %s, fleet steady window %s: want positive",
			cfg.Duration, cfg.Warmup, cfg.MixDuration, cfg.FleetRamp, cfg.FleetSteady))
	}
	for _, n := range slices.Concat(cfg.Fleet, cfg.FleetBaseline) {
		if n < 1 {
			errs = append(errs, fmt.Errorf("fleet size %d: want at least 1", n))
		}
	}
	for _, m := range cfg.FleetModes {
		if m != sim.ModeFirmware && m != sim.ModeAgent {
			errs = append(errs, fmt.Errorf("fleet mode %q: want firmware, agent or none", m))
		}
	}
	if len(cfg.FleetBaseline) > 0 && len(cfg.Fleet) == 0 {
		errs = append(errs, errors.New("fleet baseline: runs only in a fleet run (--fleet)"))
	}
	if len(cfg.FleetBaseline) > 0 && !executable(cfg.Nginx) {
		errs = append(errs, fmt.Errorf("nginx not found at %s (the fleet baseline): scripts/bench.sh installs it (apt-get install nginx-light)", cfg.Nginx))
	}
	for _, bin := range []string{"picogate", "kubectl", "picosim"} {
		if p := filepath.Join(cfg.BinDir, bin); !executable(p) {
			errs = append(errs, fmt.Errorf("%s not found: run `make build controlplane`", p))
		}
	}
	if needsNginx(cfg.Targets) && len(cfg.Fleet) == 0 && !executable(cfg.Nginx) {
		errs = append(errs, fmt.Errorf("nginx not found at %s: scripts/bench.sh installs it (apt-get install nginx-light)", cfg.Nginx))
	}
	return errors.Join(errs...)
}

// fleetSteady is the steady window of a fleet in mode (see FleetSteady).
func (cfg *Config) fleetSteady(mode string) time.Duration {
	switch {
	case cfg.FleetSteady > 0:
		return cfg.FleetSteady
	case mode == sim.ModeAgent:
		return 2 * time.Minute
	default:
		return 5*time.Minute + 30*time.Second
	}
}

func needsNginx(targets []string) bool {
	return slices.Contains(targets, TargetNginxSeed) || slices.Contains(targets, TargetNginxTuned)
}

// SplitList splits a comma-separated flag value; empty means none.
func SplitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// ParseSizes parses a comma-separated list of fleet sizes.
func ParseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range SplitList(s) {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("fleet sizes %q: want comma-separated device counts", s)
		}
		out = append(out, n)
	}
	return out, nil
}
