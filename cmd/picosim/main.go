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

	"github.com/picogate/picogate/device"
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
	flag.StringVar(&cfg.Gateway, "gateway", "http://127.0.0.1:6080", "gateway base URL (https://HOST:PORT for its TLS port, with --ca)")
	caFile := flag.String("ca", "", "with an https:// --gateway: the CA the boards pin (the ca.crt picogate setup --tls wrote)")
	serverName := flag.String("tls-server-name", "", "with --ca: the name the gateway's certificate is checked for (default the --gateway host)")
	creds := flag.String("credentials", "", "JSON from `picogate device add ... -o json` (array or object); devices with auth hmac sign every request")
	flag.StringVar(&cfg.Mode, "mode", sim.ModeAgent, "agent (the device package) or firmware (the reference firmware's wire behaviour)")
	flag.DurationVar(&cfg.Duration, "duration", 0, "stop after this long (default: until Ctrl-C)")
	flag.BoolVar(&cfg.Jitter, "jitter", true, "spread starts and jitter periods, like a real fleet")
	flag.DurationVar(&cfg.StartSpread, "ramp", 0, "with --jitter: the boot ramp, board starts spread uniformly over it; the report splits errors at its end (default 10s)")
	flag.BoolVar(&cfg.FirmwareETag, "firmware-etag", false, "firmware mode: boards send the ConfigMap's last ETag as If-None-Match (a one-header change to the reference firmware)")
	flag.DurationVar(&cfg.AgentConfigInterval, "agent-config-interval", 0, "agent mode: each board reads ConfigMap default/pico-config this often, with If-None-Match (default: never)")
	enrollToken := flag.String("enroll-token", "", "instead of --credentials: the boards enroll themselves with this enrollment token (pge_…), as hmac devices with key agreement")
	gatewayKey := flag.String("gateway-key", "", "with --enroll-token: the gateway public key (64 hex digits) that picogate token create printed, pinned by every board")
	names := flag.String("names", "", "firmware mode, instead of --credentials: boards PREFIX1 … PREFIXcount with no credential at all, for a proxy that authenticates itself upstream (e.g. nginx with a client certificate)")
	count := flag.Int("count", 1, "with --enroll-token: how many boards enroll; with --names: how many boards run")
	prefix := flag.String("prefix", sim.DefaultEnrollPrefix, "with --enroll-token: the boards are PREFIX1 … PREFIXcount")
	reportJSON := flag.String("report-json", "", "also write the final report as JSON to this file")
	verbose := flag.Bool("v", false, "log each device's activity to stderr")
	flag.Parse()
	var err error
	switch {
	case *enrollToken != "" && *creds != "":
		return errors.New("--enroll-token and --credentials exclude each other: the boards either enroll or use given credentials")
	case *names != "" && (*enrollToken != "" || *creds != ""):
		return errors.New("--names excludes --credentials and --enroll-token: its boards carry no credential")
	case *names != "":
		if *count < 1 {
			return fmt.Errorf("--count %d: want at least 1", *count)
		}
		cfg.Credentials = sim.NamedBoards(*names, *count)
	case *enrollToken != "":
		key, err := device.ParseGatewayKey(*gatewayKey)
		if err != nil {
			return fmt.Errorf("--gateway-key: want the %d hex digits that picogate token create printed", 2*device.GatewayKeySize)
		}
		cfg.Enrollment = &sim.Enrollment{Token: *enrollToken, GatewayKey: key, Count: *count, Prefix: *prefix}
	default:
		if cfg.Credentials, err = sim.ReadCredentials(*creds); err != nil {
			return fmt.Errorf("--credentials: %w", err)
		}
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("--ca: %w", err)
		}
		if cfg.TLS, err = device.PinnedTLS(pem, *serverName); err != nil {
			return fmt.Errorf("--ca %s: %w", *caFile, err)
		}
	} else if *serverName != "" {
		return errors.New("--tls-server-name: give the CA to pin with --ca")
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
