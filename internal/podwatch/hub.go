package podwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/cache"

	"github.com/picogate/picogate/internal/asdevice"
)

// Defaults.
const (
	DefaultAuthzWindow   = 2 * time.Minute
	DefaultMaxEvents     = 8192
	DefaultMaxEventBytes = 16 << 20
	DefaultMaxTimeout    = 30 * time.Minute
	DefaultBookmarkEvery = time.Minute
	DefaultMaxDown       = 10 * time.Second
)

// Config configures a Hub. Zero values take the documented defaults.
type Config struct {
	// Source lists and watches pods with the gateway's own credential (RESTSource). Required.
	Source Source
	// AsDevice makes the authorization probes, as the device (asdevice.Client). Required.
	AsDevice asdevice.Doer
	// AuthzWindow is how long the API server's 200 to a device's own list of its pods (or to a probe
	// made as the device) lets the device be served its pod watch from the shared watch. Default 2m,
	// the read cache's.
	AuthzWindow time.Duration
	// MaxEvents and MaxEventBytes bound the history kept for watches that resume from a
	// resourceVersion: the newest events, at most this many and this many bytes of pods (an event of a
	// pod still held shares its bytes). Defaults 8192 and 16 MiB.
	MaxEvents     int
	MaxEventBytes int64
	// MaxTimeout ends a served watch whose timeoutSeconds is absent, zero or larger. Default 30m, the
	// gateway's --max-watch-timeout.
	MaxTimeout time.Duration
	// BookmarkEvery is how often a served watch that allows bookmarks gets one. Default 1m, the API
	// server's.
	BookmarkEvery time.Duration
	// MaxDown is how long the shared watch may be broken before the served watches end. Default 10s.
	MaxDown time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger; default discards.
	Logger *slog.Logger
}

// Hub holds the shared pod watch and serves devices' watches from it. It is safe for concurrent use.
type Hub struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	synced  bool
	rv      uint64           // the newest resourceVersion the shared watch has seen
	base    uint64           // the resourceVersion of the last full list: every event after it is known
	nodes   map[string]*node // by node name
	fifo    []*event         // the history, oldest first, as a ring: fifo[head], fifo[head+1], …
	head, n int              // ring position and count
	bytes   int64            // raw bytes of the events held
	fresh   chan struct{}    // closed and replaced whenever rv advances
	reset   *ending          // ended and replaced when every served watch must end
	known   atomic.Uint64    // the newest resourceVersion the API server is known to have issued
	up      atomic.Bool      // the shared watch is whole: its last list or watch succeeded
	downAt  atomic.Int64     // unix nanoseconds when up turned false; 0 while up
	grants  sync.Map         // device name → *atomic.Int64: unix nanoseconds of the API server's last 200
	served  atomic.Int64     // watches being served
	lastErr atomic.Pointer[string]

	rounds rounds // revision lists (currentRevision)

	requests, probes                            *prometheus.CounterVec
	servedGauge, heldEvents, heldBytes, upGauge prometheus.Collector
}

// node is what the hub holds for one node: its pods, its events in the history, its watchers.
type node struct {
	pods     map[string][]byte // by namespace/name: the pod as served (object.raw)
	first    *event            // its oldest event held; events link to the node's next one
	last     *event
	floor    uint64 // events of this node after floor are all held (with the hub's base)
	watchers []*watcher
}

// event is one change of a pod, as it goes to the node's watchers.
type event struct {
	rv   uint64
	typ  string // ADDED, MODIFIED, DELETED
	raw  []byte // the pod: shared with the node's current pod when it is that version
	node *node
	next *event // the node's next event
}

// New validates cfg, reporting every problem at once, and builds a Hub.
func New(cfg Config) (*Hub, error) {
	setDefault(&cfg.AuthzWindow, DefaultAuthzWindow)
	setDefault(&cfg.MaxEvents, DefaultMaxEvents)
	setDefault(&cfg.MaxEventBytes, DefaultMaxEventBytes)
	setDefault(&cfg.MaxTimeout, DefaultMaxTimeout)
	setDefault(&cfg.BookmarkEvery, DefaultBookmarkEvery)
	setDefault(&cfg.MaxDown, DefaultMaxDown)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if cfg.Source == nil {
		errs = append(errs, errors.New("a source (the gateway's own pod list and watch) is required"))
	}
	if cfg.AsDevice == nil {
		errs = append(errs, errors.New("an upstream as the device (authorization probes) is required"))
	}
	if cfg.AuthzWindow < 0 || cfg.AuthzWindow > time.Hour {
		errs = append(errs, fmt.Errorf("authorization window %v: want 0 to 1h", cfg.AuthzWindow))
	}
	if cfg.MaxEvents < 1 {
		errs = append(errs, fmt.Errorf("max events %d: want at least 1", cfg.MaxEvents))
	}
	if cfg.MaxEventBytes < 1 {
		errs = append(errs, fmt.Errorf("max event bytes %d: want at least 1", cfg.MaxEventBytes))
	}
	for name, d := range map[string]time.Duration{"max timeout": cfg.MaxTimeout, "bookmark interval": cfg.BookmarkEvery, "max down": cfg.MaxDown} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", name, d))
		}
	}
	if cfg.MaxTimeout > 0 && cfg.MaxTimeout < time.Second {
		errs = append(errs, fmt.Errorf("max timeout %v is below 1s", cfg.MaxTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("invalid shared pod watch configuration: %w", err)
	}
	h := &Hub{cfg: cfg, log: cfg.Logger.With("component", "podwatch"), nodes: map[string]*node{},
		fifo: make([]*event, min(cfg.MaxEvents, 1024)), fresh: make(chan struct{}), reset: newEnding()}
	h.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "picogate_pod_watch_requests_total",
		Help: "Device pod watches by how they were answered: served (from the shared watch), gone (410: older than the history), or relayed and why."}, []string{"result"})
	h.probes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "picogate_pod_watch_probes_total",
		Help: "Lists the shared pod watch made: device (as the device, to authorize it), revision (as the gateway, for the API server's current revision)."}, []string{"kind"})
	h.servedGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "picogate_pod_watches_served", Help: "Device pod watches open and served from the shared watch."},
		func() float64 { return float64(h.served.Load()) })
	h.heldEvents = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "picogate_pod_watch_history_events", Help: "Pod events the shared watch keeps for watches that resume."},
		func() float64 { h.mu.Lock(); defer h.mu.Unlock(); return float64(h.n) })
	h.heldBytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "picogate_pod_watch_history_bytes", Help: "Bytes of the pods in the shared watch's history."},
		func() float64 { h.mu.Lock(); defer h.mu.Unlock(); return float64(h.bytes) })
	h.upGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "picogate_pod_watch_up", Help: "1 while the shared pod watch is synced and whole, so device pod watches are served from it."},
		func() float64 {
			if h.Ready() {
				return 1
			}
			return 0
		})
	h.downAt.Store(cfg.Now().UnixNano())
	return h, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Collectors are the hub's metrics, for the gateway's registry.
func (h *Hub) Collectors() []prometheus.Collector {
	return []prometheus.Collector{h.requests, h.probes, h.servedGauge, h.heldEvents, h.heldBytes, h.upGauge}
}

// Ready reports whether device watches are served from the shared watch: it has listed and is whole.
func (h *Hub) Ready() bool {
	if !h.up.Load() {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.synced
}

// Run keeps the shared watch until ctx ends: a client-go reflector lists and watches every scheduled
// pod (spec.nodeName!="") with the gateway's credential, relisting and backing off as client-go does.
func (h *Hub) Run(ctx context.Context) error {
	lw := &listerWatcher{src: h.cfg.Source, selector: "spec.nodeName!=", up: h.setUp}
	r := cache.NewReflectorWithOptions(lw, &object{}, (*store)(h), cache.ReflectorOptions{Name: "podwatch"})
	go h.watchDown(ctx)
	r.RunWithContext(ctx)
	h.endAll(false)
	return nil
}

// setUp records whether the shared watch's view is whole. A forbidden list or watch is logged once, as
// what it means: the gateway's RBAC lacks cluster-wide pods list/watch, so device watches are relayed.
func (h *Hub) setUp(up bool, err error) {
	if up {
		if !h.up.Swap(true) {
			h.downAt.Store(0)
		}
		return
	}
	if h.up.Swap(false) {
		h.downAt.Store(h.cfg.Now().UnixNano())
	}
	msg := err.Error()
	if old := h.lastErr.Swap(&msg); old != nil && *old == msg {
		return
	}
	if apierrors.IsForbidden(err) {
		h.log.Warn("the gateway may not list and watch pods cluster-wide; device pod watches are relayed to the API server", "err", err)
		return
	}
	h.log.Info("shared pod watch interrupted; device pod watches are relayed until it is whole", "err", err)
}

// watchDown ends the served watches when the shared watch stays broken longer than MaxDown, and sweeps
// the authorization windows that have passed.
func (h *Hub) watchDown(ctx context.Context) {
	t := time.NewTicker(max(h.cfg.MaxDown/4, 100*time.Millisecond))
	defer t.Stop()
	ended, swept := false, h.cfg.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := h.cfg.Now(); now.Sub(swept) > h.cfg.AuthzWindow {
			h.sweep()
			swept = now
		}
		at := h.downAt.Load()
		switch {
		case at == 0:
			ended = false
		case !ended && h.cfg.Now().Sub(time.Unix(0, at)) > h.cfg.MaxDown:
			ended = true
			if h.served.Load() > 0 {
				h.log.Warn("shared pod watch broken; ending the device pod watches it served", "watches", h.served.Load())
			}
			h.endAll(true)
		}
	}
}

// endAll ends every served watch: with an ERROR 503 event when broken, cleanly otherwise.
func (h *Hub) endAll(broken bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.endAllLocked(broken)
}

func (h *Hub) endAllLocked(broken bool) {
	h.reset.broken = broken
	close(h.reset.done)
	h.reset = newEnding()
}

// ending tells the served watches to end, and how: broken is written before done is closed.
type ending struct {
	done   chan struct{}
	broken bool
}

func newEnding() *ending { return &ending{done: make(chan struct{})} }
