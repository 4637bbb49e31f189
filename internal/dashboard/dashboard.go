package dashboard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/picogate/picogate/internal/registry"
)

// Registry is what the dashboard reads of the device registry (registry.Cache): the devices, their
// auth mode and status. It never reads or sends a credential.
type Registry interface {
	Names() []string
	ByName(name string) (*registry.Device, bool)
}

// Config configures a Dashboard. Zero values take the documented defaults.
type Config struct {
	// Registry lists the devices. Required.
	Registry Registry
	// Client reads Nodes, Leases and pods for the Kubernetes view. Nil turns the view off.
	Client kubernetes.Interface
	// RequestsPerDevice is the length of each device's ring of last requests. Default 20.
	RequestsPerDevice int
	// RefusalsPerDevice is the length of each device's ring of last refusals. Default 8.
	RefusalsPerDevice int
	// Interval is the resolution of the fleet charts. Default 10s.
	Interval time.Duration
	// History is how far back the fleet charts go. Default 1h.
	History time.Duration
	// Tick is how often the live fleet stream looks for changes. Default 1s.
	Tick time.Duration
	// MaxStreams caps concurrent live streams (browser tabs) on the admin port. Default 32.
	MaxStreams int
	// Logger; default discards.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Dashboard keeps the fleet's recent history in memory and serves the page.
type Dashboard struct {
	cfg     Config
	log     *slog.Logger
	stats   *statsMap
	anon    *deviceStats // requests without a device identity
	texts   *dashTexts   // the strings the rings keep, each stored once
	history *history
	kube    *kubeView
	streams chan struct{} // a slot per live stream
	snap    snapshotCache
	done    chan struct{} // closed when Run ends: open streams end with it
}

// New validates cfg, reporting every problem at once.
func New(cfg Config) (*Dashboard, error) {
	setDefault(&cfg.RequestsPerDevice, 20)
	setDefault(&cfg.RefusalsPerDevice, 8)
	setDefault(&cfg.Interval, 10*time.Second)
	setDefault(&cfg.History, time.Hour)
	setDefault(&cfg.Tick, time.Second)
	setDefault(&cfg.MaxStreams, 32)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var errs []error
	if cfg.Registry == nil {
		errs = append(errs, errors.New("a device registry is required"))
	}
	if cfg.RequestsPerDevice < 0 || cfg.RequestsPerDevice > 1000 {
		errs = append(errs, fmt.Errorf("requests per device %d is outside 0…1000", cfg.RequestsPerDevice))
	}
	if cfg.RefusalsPerDevice < 0 || cfg.RefusalsPerDevice > 1000 {
		errs = append(errs, fmt.Errorf("refusals per device %d is outside 0…1000", cfg.RefusalsPerDevice))
	}
	if cfg.Interval < time.Second {
		errs = append(errs, fmt.Errorf("chart interval %v is below 1s", cfg.Interval))
	}
	if cfg.History < cfg.Interval || cfg.History/cfg.Interval > 10000 {
		errs = append(errs, fmt.Errorf("chart history %v must hold 1…10000 intervals of %v", cfg.History, cfg.Interval))
	}
	if cfg.Tick < 100*time.Millisecond || cfg.Tick > 2*time.Second {
		errs = append(errs, fmt.Errorf("stream tick %v is outside 100ms…2s (a change must show within 2s)", cfg.Tick))
	}
	if cfg.MaxStreams < 1 {
		errs = append(errs, fmt.Errorf("max streams %d is below 1", cfg.MaxStreams))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("invalid dashboard configuration: %w", err)
	}
	return &Dashboard{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "dashboard"),
		stats:   newStatsMap(),
		texts:   newDashTexts(),
		anon:    newDeviceStats(cfg.RequestsPerDevice, cfg.RefusalsPerDevice),
		history: newHistory(cfg.Interval, int(cfg.History/cfg.Interval)),
		kube:    newKubeView(cfg.Client, cfg.Logger),
		streams: make(chan struct{}, cfg.MaxStreams),
		done:    make(chan struct{}),
	}, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// DeviceBytes is the memory one device's state takes with cfg's ring sizes (defaults applied): always
// is allocated on the device's first request, refused on its first refusal; neither grows. The paths,
// reasons and user agents the rings show are stored once for the whole fleet and not counted.
func DeviceBytes(cfg Config) (always, refused int) {
	setDefault(&cfg.RequestsPerDevice, 20)
	setDefault(&cfg.RefusalsPerDevice, 8)
	return deviceBytes(cfg.RequestsPerDevice, cfg.RefusalsPerDevice)
}

// Record takes one finished request. It is called on the gateway's request path: it allocates nothing
// after a device's first request (or first refusal) unless the request brings a text not seen before,
// and locks only that device's state.
func (d *Dashboard) Record(ev Event) {
	class := Classify(&ev)
	d.history.cur.add(&ev, class)
	s := d.anon
	if ev.Device != "" {
		s = d.stats.getOrCreate(ev.Device, d.cfg.RequestsPerDevice, d.cfg.RefusalsPerDevice)
	}
	s.record(&ev, class, d.texts)
}

// Run keeps the charts' intervals, drops the state of devices removed from the registry and runs the
// Kubernetes view, until ctx ends; then it ends the open live streams, so a graceful shutdown of the
// admin port does not wait for browser tabs. Call it once.
func (d *Dashboard) Run(ctx context.Context) error {
	defer close(d.done)
	go d.kube.run(ctx)
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			ready, nodes := d.kube.readyCount(func(name string) bool { _, ok := d.cfg.Registry.ByName(name); return ok })
			d.history.rotate(d.cfg.Now(), ready, nodes)
			d.stats.retain(func(name string) bool {
				_, ok := d.cfg.Registry.ByName(name)
				return ok
			})
		}
	}
}
