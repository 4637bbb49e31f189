package sim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/picogate/picogate/device"
)

// Modes.
const (
	ModeAgent    = "agent"
	ModeFirmware = "firmware"
)

// Config describes a simulated fleet. Gateway and one of Credentials and Enrollment are required.
type Config struct {
	// Gateway is the gateway's base URL, e.g. "http://127.0.0.1:6080", or
	// "https://…" for its TLS port (with TLS).
	Gateway string
	// TLS pins the CA of an https:// Gateway (device.PinnedTLS); each board
	// gets its own session cache, so each resumes its own session.
	TLS *tls.Config
	// Credentials are the devices' identities; Devices of them are used.
	Credentials []Credential
	// Enrollment, instead of Credentials, makes the boards enroll themselves (hmac with key agreement)
	// and run with the keys they derived.
	Enrollment *Enrollment
	// Devices is how many to run: the first Devices credentials. 0 means all.
	Devices int
	// Mode is ModeAgent (default) or ModeFirmware.
	Mode string
	// Duration stops the fleet after this long; 0 runs until ctx ends.
	Duration time.Duration
	// Jitter spreads the devices' starts over StartSpread and jitters the
	// agents' periods, as a real fleet booting at different times would.
	Jitter bool
	// StartSpread is the window starts are spread over with Jitter (default
	// 10 s, the firmware's status period): the boot ramp. Starts are uniform
	// over it.
	StartSpread time.Duration
	// SplitAt is when, after the start, the report stops counting errors as
	// the boot ramp's and starts counting them as after it (Report's
	// ErrorsDuringRamp and ErrorsAfterRamp). Default StartSpread.
	SplitAt time.Duration
	// Apps are the agents' built-in apps; default device.BuiltinApps().
	Apps map[string]device.App
	// Summary, when set, receives a one-line live summary every
	// SummaryInterval (default 1 s), rewritten in place (for a terminal).
	Summary         io.Writer
	SummaryInterval time.Duration
	// FirmwareStatusInterval and FirmwareConfigInterval are the reference
	// firmware's periods (10 s and 30 s); tests shorten them.
	FirmwareStatusInterval time.Duration
	FirmwareConfigInterval time.Duration
	// FirmwareETag makes firmware-mode boards remember the ConfigMap's ETag
	// and send it as If-None-Match (a one-header change to the reference
	// firmware: an unchanged ConfigMap is then a 304 without a body). Off,
	// the boards behave as the unmodified firmware.
	FirmwareETag bool
	// AgentConfigInterval makes each agent read the fleet's ConfigMap
	// default/pico-config this often, with If-None-Match
	// (device.Agent.ConfigMap); 0, the default, never.
	AgentConfigInterval time.Duration
	// Tune, when set, adjusts each agent's device.Config before New (tests
	// shorten timings with it).
	Tune func(*device.Config)
	// Logger receives the devices' logs; default discard.
	Logger *slog.Logger
}

// Simulator is a configured fleet.
type Simulator struct {
	cfg     Config
	devices []simDevice
}

// simDevice is one virtual device of either mode.
type simDevice interface {
	Run(ctx context.Context) error
	Snapshot() DeviceReport
}

// New checks cfg, reporting every problem at once, and builds the devices.
func New(cfg Config) (*Simulator, error) {
	var errs []error
	if cfg.Enrollment != nil {
		e := *cfg.Enrollment
		creds, err := e.credentials()
		switch {
		case len(cfg.Credentials) > 0:
			errs = append(errs, errors.New("enrollment: the boards enroll themselves; give no credentials with it"))
		case err != nil:
			errs = append(errs, fmt.Errorf("enrollment: %w", err))
		default:
			cfg.Enrollment, cfg.Credentials = &e, creds
		}
	}
	if u, err := url.Parse(cfg.Gateway); cfg.Gateway == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("gateway %q: want an http:// or https:// URL", cfg.Gateway))
	} else if err := checkTLS(cfg.Gateway, cfg.TLS); err != nil {
		errs = append(errs, err)
	}
	if cfg.Devices < 0 || cfg.Devices > len(cfg.Credentials) {
		errs = append(errs, fmt.Errorf("devices %d: the credentials hold %d", cfg.Devices, len(cfg.Credentials)))
	}
	if len(cfg.Credentials) == 0 && cfg.Enrollment == nil {
		errs = append(errs, errors.New("credentials: none"))
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeAgent
	}
	if cfg.Mode != ModeAgent && cfg.Mode != ModeFirmware {
		errs = append(errs, fmt.Errorf("mode %q: want agent or firmware", cfg.Mode))
	}
	if cfg.Mode != ModeFirmware && slices.ContainsFunc(cfg.Credentials, func(c Credential) bool { return c.Auth == AuthNone }) {
		errs = append(errs, errors.New("boards without a credential: only firmware mode runs them (behind a proxy that authenticates itself)"))
	}
	if cfg.StartSpread < 0 || cfg.SplitAt < 0 {
		errs = append(errs, fmt.Errorf("start spread %s, split at %s: negative", cfg.StartSpread, cfg.SplitAt))
	}
	if cfg.Duration < 0 {
		errs = append(errs, fmt.Errorf("duration %s: negative", cfg.Duration))
	}
	if cfg.Devices == 0 {
		cfg.Devices = len(cfg.Credentials)
	}
	setDefault(&cfg.StartSpread, 10*time.Second)
	setDefault(&cfg.SplitAt, cfg.StartSpread)
	setDefault(&cfg.SummaryInterval, time.Second)
	setDefault(&cfg.FirmwareStatusInterval, 10*time.Second)
	setDefault(&cfg.FirmwareConfigInterval, 30*time.Second)
	if cfg.Apps == nil {
		cfg.Apps = device.BuiltinApps()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("simulator config: %w", err)
	}
	s := &Simulator{cfg: cfg}
	for _, c := range cfg.Credentials[:cfg.Devices] {
		d, err := s.newDevice(c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.devices = append(s.devices, d)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("simulator devices: %w", err)
	}
	return s, nil
}

func (s *Simulator) newDevice(c Credential) (simDevice, error) {
	if s.cfg.Enrollment != nil {
		return newEnrolling(s.cfg, c), nil
	}
	return newSimDevice(s.cfg, c)
}

// newSimDevice builds a device of cfg's mode that runs with credential c.
func newSimDevice(cfg Config, c Credential) (simDevice, error) {
	if cfg.Mode == ModeFirmware {
		return newFirmware(cfg, c)
	}
	return newAgent(cfg, c)
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// Run runs the fleet until ctx ends or Duration passes, and reports. Every
// device has stopped when it returns.
func (s *Simulator) Run(ctx context.Context) (*Report, error) {
	if s.cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.Duration)
		defer cancel()
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(s.devices))
	for i, d := range s.devices {
		var delay time.Duration
		if s.cfg.Jitter {
			delay = time.Duration(rand.Int64N(int64(s.cfg.StartSpread)))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			errs[i] = d.Run(ctx)
		}()
	}
	// The fleet's counters when the ramp ends, so the report can tell the boot's errors from later ones.
	var atSplit []DeviceReport
	wg.Go(func() {
		t := time.NewTimer(s.cfg.SplitAt)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
			atSplit = s.Snapshot()
		}
	})
	if s.cfg.Summary != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.summarize(ctx, start)
		}()
	}
	wg.Wait()
	r := s.report(time.Since(start))
	r.split(s.cfg.SplitAt, atSplit)
	return r, errors.Join(errs...)
}

// Snapshot reports the fleet's state now (safe while Run runs).
func (s *Simulator) Snapshot() []DeviceReport {
	out := make([]DeviceReport, len(s.devices))
	for i, d := range s.devices {
		out[i] = d.Snapshot()
	}
	return out
}
