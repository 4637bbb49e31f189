package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Bench is a configured run.
type Bench struct {
	cfg Config
}

// New checks cfg, reporting every problem at once.
func New(cfg Config) (*Bench, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("bench config: %w", err)
	}
	var err error
	for _, p := range []*string{&cfg.BinDir, &cfg.NginxConfDir, &cfg.OutDir, &cfg.ExamplesDir} {
		if *p, err = filepath.Abs(*p); err != nil {
			return nil, fmt.Errorf("bench config: %w", err)
		}
	}
	cfg.proc = NewProc()
	return &Bench{cfg: cfg}, nil
}

// Run starts the control plane and the targets, runs every round, and writes the report. ctx ending
// stops it early with what was measured so far discarded.
func (b *Bench) Run(ctx context.Context) (err error) {
	cfg := &b.cfg
	if cfg.WorkDir == "" {
		if err := os.MkdirAll("tmp", 0o755); err != nil {
			return fmt.Errorf("run folder: %w", err)
		}
		if cfg.WorkDir, err = os.MkdirTemp("tmp", "bench-"); err != nil {
			return fmt.Errorf("run folder: %w", err)
		}
		if !cfg.KeepWorkDir {
			defer func() { err = errors.Join(err, os.RemoveAll(cfg.WorkDir)) }()
		}
	}
	if cfg.WorkDir, err = filepath.Abs(cfg.WorkDir); err != nil {
		return fmt.Errorf("run folder: %w", err)
	}
	began := time.Now()
	b.progress("starting the control plane")
	l, err := startLab(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, l.stop()) }()
	rep := newReport(cfg, began)
	if len(cfg.Fleet) > 0 {
		err = b.runFleet(ctx, l, rep)
	} else {
		err = b.runTargets(ctx, l, rep)
	}
	if err != nil {
		return err
	}
	b.progress("")
	if !cfg.ProgressLines {
		fmt.Fprintln(cfg.Progress)
	}
	return rep.write(cfg.OutDir, len(cfg.Fleet) > 0)
}

// runTargets starts every target, then runs rounds × workloads × targets, rotating the targets'
// order each round.
func (b *Bench) runTargets(ctx context.Context, l *lab, rep *Report) (err error) {
	cfg := &b.cfg
	var targets []*target
	defer func() {
		for _, t := range targets {
			err = errors.Join(err, t.stop())
		}
	}()
	for _, name := range cfg.Targets {
		b.progress("starting " + name)
		t, err := l.startTarget(ctx, name)
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}
	rep.collectVersions(ctx, l)
	cells := map[[2]string]*cell{}
	total, done := 0, 0
	for _, w := range cfg.Workloads {
		for _, t := range targets {
			if t.name != TargetTokenNoLog || loadWorkloads[w] {
				total += cfg.Rounds
			}
		}
	}
	for round := range cfg.Rounds {
		for _, w := range cfg.Workloads {
			for i := range targets {
				t := targets[(i+round)%len(targets)]
				if t.name == TargetTokenNoLog && !loadWorkloads[w] {
					continue // the access log's cost shows on the load workloads; the rest would only add time
				}
				key := [2]string{t.name, w}
				if cells[key] == nil {
					cells[key] = &cell{target: t.name, workload: w}
				}
				done++
				b.progress(fmt.Sprintf("round %d/%d  %-11s %-20s cell %d/%d", round+1, cfg.Rounds, w, t.name, done, total))
				if err := b.runCell(ctx, l, t, w, cells[key]); err != nil {
					return fmt.Errorf("%s on %s: %w", w, t.name, err)
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
			}
		}
	}
	if cfg.CPUProfile != "" {
		if err := b.profileTargets(ctx, targets, rep); err != nil {
			return err
		}
	}
	for _, name := range cfg.Targets {
		for _, w := range cfg.Workloads {
			if c := cells[[2]string{name, w}]; c != nil {
				rep.Results = append(rep.Results, c.result())
			}
		}
	}
	if cfg.Handler {
		b.progress("handler benchmarks (go test -bench)")
		var err error
		if rep.Handler, err = handlerCosts(ctx); err != nil {
			cfg.Logger.Warn("no allocation figures", "err", err)
		}
	}
	rep.Notes = readNotes(cfg.NotesFile)
	rep.Settings.LoadAverage[1] = loadAvg()
	rep.finish()
	return nil
}

// runCell runs one workload against one target for one round and adds it to c.
func (b *Bench) runCell(ctx context.Context, l *lab, t *target, w string, c *cell) error {
	cfg := &b.cfg
	m := l.meter(t.pids)
	switch {
	case loadWorkloads[w]:
		res := runLoad(ctx, loadSpec{Endpoint: t.endpoint, Conns: cfg.Conns, Close: closes(w), Warmup: cfg.Warmup,
			Duration: cfg.Duration, Request: t.requests(w), Window: m.window})
		c.addLoad(res, m.used())
		return nil
	case w == WorkloadWatch:
		res, err := l.runWatch(ctx, t, cfg.Watchers, cfg.WatchRepeats, m.window)
		if err != nil {
			return err
		}
		c.addWatch(res, m.used())
		return nil
	case w == WorkloadMix:
		if t.endpoint.TLS != nil {
			c.skipped = "picosim speaks plain HTTP only"
			return nil
		}
		res, err := l.runMix(ctx, t, m.window)
		if err != nil {
			return err
		}
		c.addMix(res, m.used())
		return nil
	}
	return fmt.Errorf("unknown workload %q", w)
}

func (b *Bench) progress(s string) {
	switch {
	case !b.cfg.ProgressLines:
		fmt.Fprintf(b.cfg.Progress, "\r\033[K%s", s)
	case s != "":
		fmt.Fprintln(b.cfg.Progress, s)
	}
}
