// Command picosim runs N virtual Pico devices against a picogate gateway.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/picogate/picogate/internal/sim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "picosim:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg sim.Config
	flag.IntVar(&cfg.Devices, "devices", 0, "how many devices to run (default: every entry of --credentials)")
	flag.StringVar(&cfg.Gateway, "gateway", "http://127.0.0.1:6080", "gateway base URL")
	creds := flag.String("credentials", "", "JSON from `picogate device add ... -o json` (array or object); devices with auth hmac sign every request")
	flag.StringVar(&cfg.Mode, "mode", sim.ModeAgent, "agent (the device package) or firmware (the reference firmware's wire behaviour)")
	flag.DurationVar(&cfg.Duration, "duration", 0, "stop after this long (default: until Ctrl-C)")
	flag.BoolVar(&cfg.Jitter, "jitter", true, "spread starts and jitter periods, like a real fleet")
	reportJSON := flag.String("report-json", "", "also write the final report as JSON to this file")
	verbose := flag.Bool("v", false, "log each device's activity to stderr")
	flag.Parse()
	var err error
	if cfg.Credentials, err = sim.ReadCredentials(*creds); err != nil {
		return fmt.Errorf("--credentials: %w", err)
	}
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	} else if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		cfg.Summary = os.Stderr
	}
	s, err := sim.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	report, runErr := s.Run(ctx)
	if err := report.WriteText(os.Stdout); err != nil || *reportJSON == "" {
		return errors.Join(runErr, err)
	}
	return errors.Join(runErr, report.WriteJSONFile(*reportJSON))
}
