// Command picobench benchmarks picogate side by side with nginx, kubectl proxy and direct HTTPS against
// one local control plane, and writes docs/benchmarks.{json,md}. `make bench` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/picogate/picogate/internal/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "picobench:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg bench.Config
	var targets, workloads, fleet, fleetModes, fleetBaseline string
	flag.StringVar(&targets, "targets", "", "comma-separated targets (default all): "+strings.Join(bench.AllTargets, ","))
	flag.StringVar(&workloads, "workloads", "", "comma-separated workloads (default all): "+strings.Join(bench.AllWorkloads, ","))
	flag.DurationVar(&cfg.Duration, "duration", 0, "measured window per target, workload and round (default 5s; --quick 3s)")
	flag.IntVar(&cfg.Rounds, "rounds", 0, "interleaved rounds (default 3; --quick 2)")
	flag.IntVar(&cfg.Conns, "conns", 0, "concurrent load connections (default 16)")
	flag.IntVar(&cfg.Watchers, "watchers", 0, "watchers in the fan-out workload (default 100)")
	flag.IntVar(&cfg.MixDevices, "mix-devices", 0, "picosim devices in the fleet-mix workload (default 100)")
	flag.BoolVar(&cfg.Quick, "quick", false, "a short run for a first look")
	flag.StringVar(&fleet, "fleet", "", "fleet-scale mode instead: comma-separated board counts through picogate, e.g. 1000,5000,10000")
	flag.StringVar(&fleetModes, "fleet-modes", "firmware,agent", "with --fleet: the picosim modes to run at each size (none: only the baseline)")
	flag.StringVar(&fleetBaseline, "fleet-baseline", "5000", "with --fleet: comma-separated sizes of the firmware fleet through nginx-tuned, the baseline (none: no baseline)")
	flag.DurationVar(&cfg.FleetRamp, "fleet-ramp", 0, "with --fleet: the boot ramp, board starts spread uniformly over it (default 60s; --quick 10s)")
	flag.DurationVar(&cfg.FleetSteady, "fleet-steady", 0, "with --fleet: the measured window after the ramp (default 5m30s in firmware mode and the baseline, a whole heartbeat report interval; 2m in agent mode; --quick 40s)")
	flag.StringVar(&cfg.OutDir, "out", "docs", "folder for benchmarks.json and benchmarks.md")
	flag.StringVar(&cfg.BinDir, "bin", "bin", "folder with picogate, picosim, kubectl and the control plane")
	flag.BoolVar(&cfg.Handler, "handler", true, "also run the gateway's handler benchmarks for the allocations per request")
	flag.StringVar(&cfg.CompareBin, "compare-bin", "", "another build of picogate, run as the target "+bench.TargetTokenBefore+" beside the others")
	flag.StringVar(&cfg.CPUProfile, "cpuprofile", "", "folder to save a CPU profile of each picogate target into")
	flag.BoolVar(&cfg.KeepWorkDir, "keep", false, "keep the run folder under tmp/ (configs and logs)")
	flag.Parse()
	cfg.Targets, cfg.Workloads = bench.SplitList(targets), bench.SplitList(workloads)
	var err error
	if cfg.Fleet, err = bench.ParseSizes(fleet); err != nil {
		return err
	}
	if cfg.Fleet != nil && fleetBaseline != "none" {
		if cfg.FleetBaseline, err = bench.ParseSizes(fleetBaseline); err != nil {
			return fmt.Errorf("--fleet-baseline: %w", err)
		}
	}
	cfg.FleetModes = bench.SplitList(fleetModes)
	fi, _ := os.Stderr.Stat()
	cfg.Progress, cfg.ProgressLines = os.Stderr, fi == nil || fi.Mode()&os.ModeCharDevice == 0
	b, err := bench.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return b.Run(ctx)
}
