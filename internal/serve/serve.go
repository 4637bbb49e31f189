// Package serve wires `picogate serve`: the upstream connection, the device registry, the gateway, the
// readiness prober and the two listeners, run together until a signal, then shut down in order.
package serve

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/picogate/picogate/internal/dashboard"
	"github.com/picogate/picogate/internal/devicetls"
	"github.com/picogate/picogate/internal/enroll"
	"github.com/picogate/picogate/internal/gateway"
	"github.com/picogate/picogate/internal/health"
	"github.com/picogate/picogate/internal/nodeowner"
	"github.com/picogate/picogate/internal/podcidr"
	"github.com/picogate/picogate/internal/policy"
	"github.com/picogate/picogate/internal/registry"
	"github.com/picogate/picogate/internal/upstream"
)

// Config is everything `picogate serve` takes; the flags map onto it one to one.
type Config struct {
	Listen      string // device port, default ":6080"
	AdminListen string // health and metrics, default "127.0.0.1:6081"
	Namespace   string // device records, default picogate-system

	Upstream upstream.Config
	Gateway  gateway.Config // Upstream, Transport, Registry, Local routes and, from PolicyFile, Policy are filled in here
	Server   gateway.ServerConfig
	// TLS is the TLS device port, off unless TLS.Listen is set: the same handler and limits as the
	// plain port, behind TLS a board's mbedtls can complete (docs/tls.md).
	TLS devicetls.Config

	PolicyFile string // replaces the default device policy
	Profiling  bool   // net/http/pprof on the admin port
	// GCPercent is the Go garbage collector's target (GOGC). Default 400: a proxy's heap is small and
	// short-lived, and collecting it 4× less often saves CPU per request (docs/benchmarks.md); the
	// GOGC environment variable, when set, wins. MemoryLimit (GOMEMLIMIT, bytes) caps the heap softly
	// so the larger target never costs unbounded memory; 0 means 192 MiB unless GOMEMLIMIT is set. At
	// GOGC 400 the heap grows to the limit before it is collected, so the limit, not the fleet, sets
	// the gateway's RSS (the limit plus 10–30 MB of binary, stacks and runtime): 192 MiB keeps it under
	// 256 MB, and 5,000 reference-firmware boards need about 70 MB of it live (docs/memory.md).
	// A larger fleet, or agents holding watches, needs a larger limit, or the collector runs more often.
	GCPercent   int
	MemoryLimit int64
	// Enrollment turns on POST /picogate/v1/enroll, /rotate and /deregister: the gateway then writes
	// device records and enrollment tokens (deploy/rbac-enrollment.yaml). Off, it only reads Secrets.
	Enrollment bool
	// Fleet is heartbeat translation and cached reads (docs/heartbeat.md).
	Fleet Fleet
	// PodCIDR is the pod CIDR block device Nodes share, so boards leave the cluster's to real nodes
	// (package podcidr; --device-pod-cidr, --cluster-cidr, --node-cidr-mask-size).
	PodCIDR podcidr.Settings

	Logger *slog.Logger
}

// Run serves until ctx ends. An unusable configuration fails at once, before anything is served, with
// every problem found joined in one error: each part that can be built is built, and a part that needs
// one that failed is not tried (its error would only repeat the cause). An unreachable API server is not
// such a problem: the gateway starts, reports not-ready and keeps retrying, because a gateway that exits
// would be restarted into the same outage and devices would get connection refused instead of a 503
// with Retry-After.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	p, err := build(cfg)
	if err != nil {
		return err
	}
	if limit, ours := tuneGC(cfg.GCPercent, cfg.MemoryLimit); ours {
		p.background = append(p.background, newHeadroom(limit, cfg.Logger).Run)
	}
	logStart(cfg.Logger, cfg, p.up, p.devLn, p.adminLn)
	if err := p.serve(ctx, cfg); err != nil {
		return err
	}
	cfg.Logger.Info("picogate stopped")
	return nil
}

func (cfg Config) withDefaults() Config {
	if cfg.Listen == "" {
		cfg.Listen = ":6080"
	}
	if cfg.AdminListen == "" {
		cfg.AdminListen = "127.0.0.1:6081"
	}
	if cfg.Namespace == "" {
		cfg.Namespace = registry.DefaultNamespace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Upstream.Logger == nil {
		cfg.Upstream.Logger = cfg.Logger
	}
	if cfg.Upstream.MaxIdleConns == 0 {
		// Keep every upstream connection the requests in flight may need at once. A connection the pool
		// cannot keep is closed after one request, and the next burst pays a TLS handshake for it on
		// both ends: with 5,000 agents booting, a quarter of the gateway's CPU, and the API server's.
		cfg.Upstream.MaxIdleConns = cmp.Or(cfg.Gateway.MaxInFlight, gateway.DefaultMaxInFlight)
	}
	return cfg
}

// parts are what Run builds before it serves anything.
type parts struct {
	up      *upstream.Upstream
	reg     *registry.Cache
	nodes   *nodeowner.Cache // which Nodes are devices'
	gw      *gateway.Gateway
	prober  *health.Prober
	dash    *dashboard.Dashboard // the fleet dashboard on the admin port
	devLn   net.Listener
	adminLn net.Listener
	tlsLn   net.Listener // the TLS device port, nil when off
	// background runs beside the listeners until they have stopped: the registry's informer, the
	// readiness prober and what the optional features need.
	background []func(context.Context) error
}

// build builds every part it can and returns all the problems at once. The registry is subscribed to
// by the gateway here, once both exist and before either runs.
func build(cfg Config) (*parts, error) {
	log := cfg.Logger
	p := &parts{}
	var errs []error
	fail := func(err error) bool {
		if err != nil {
			errs = append(errs, err)
		}
		return err != nil
	}
	if cfg.MemoryLimit < 0 {
		fail(fmt.Errorf("--memory-limit %d: want a number of bytes, 0 for the default", cfg.MemoryLimit))
	}
	gc := cfg.Gateway
	gc.Logger, gc.RegistryNamespace = log, cfg.Namespace
	if gc.AccessLogger == nil {
		gc.AccessLogger = log
	}
	if cfg.PolicyFile != "" {
		var err error
		gc.Policy, err = loadPolicy(cfg.PolicyFile)
		fail(err)
	}
	up, err := upstream.New(cfg.Upstream)
	if !fail(err) {
		p.up = up
		gc.Upstream, gc.Transport, gc.WatchTransport = up.URL, up.Transport, up.WatchTransport
		reg, err := registry.NewCache(registry.CacheConfig{Client: up.Client, Namespace: cfg.Namespace, Logger: log})
		if !fail(err) {
			p.reg, gc.Registry = reg, reg
			p.background = append(p.background, reg.Run)
			nodes, checks, err := buildNodes(up, reg, log)
			if !fail(err) {
				p.nodes, gc.Checks = nodes, append(gc.Checks, checks...)
				p.background = append(p.background, nodes.Run)
			}
		}
		fleet, err := buildFleet(cfg.Fleet, up, log)
		if !fail(err) && p.reg != nil {
			gc.Answers, gc.Collectors, gc.Priority = fleet.answers, fleet.collectors, fleet.priority
			gc.WatchAnswers, gc.Forwarded = fleet.watches, fleet.forwarded
			p.background = append(p.background, fleet.run...)
			for _, f := range fleet.changed {
				p.reg.Subscribe(f)
			}
		}
		podCIDRs, err := buildPodCIDRs(cfg.PodCIDR, up.Client, log)
		if !fail(err) {
			gc.Checks = append(gc.Checks, gateway.PodCIDRCheck(podCIDRs), gateway.NodePodCIDRGuard(podCIDRs)) // after the ownership checks
		}
	}
	if p.reg != nil {
		p.prober, err = health.New(health.Config{Logger: log, Checks: []health.Check{
			{Name: "upstream", Probe: health.CredentialCheck(p.up.Client.AuthenticationV1().SelfSubjectReviews())},
			{Name: "registry", Probe: registryCheck(p.reg)},
			{Name: "nodes", Probe: nodesCheck(p.nodes)},
		}})
		if !fail(err) {
			p.background = append(p.background, p.prober.Run)
		}
		if cfg.Enrollment {
			feat, err := enroll.NewFeature(enroll.FeatureConfig{REST: p.up.REST, Client: p.up.Client, Registry: p.reg, Namespace: cfg.Namespace, RequireHMAC: gc.RequireHMAC, Logger: log})
			if !fail(err) {
				gc.Local, gc.OnNextCredential = feat.Routes, feat.Service.Promote
				p.background = append(p.background, feat.Service.Run)
			}
		}
		p.dash, err = dashboard.New(dashboard.Config{Registry: p.reg, Client: p.up.Client, Logger: log})
		if !fail(err) {
			gc.OnRequest = p.dash.Record
		}
		p.gw, err = gateway.New(gc)
		if !fail(err) {
			p.reg.Subscribe(p.gw.DeviceChanged)
			port, ln, err := buildTLS(cfg.TLS, p.gw, log)
			if !fail(err) && port != nil {
				p.tlsLn = ln
				p.background = append(p.background, port.Run)
			}
		}
	}
	if p.devLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		fail(fmt.Errorf("device port: %w", err))
	}
	if p.adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
		fail(fmt.Errorf("admin port: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		for _, ln := range []net.Listener{p.devLn, p.adminLn, p.tlsLn} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		return nil, err
	}
	return p, nil
}

// serve runs the background parts and both listeners until ctx ends, then stops the listeners (the
// device port drains its requests) before the background parts, which the requests in flight may need.
func (p *parts) serve(ctx context.Context, cfg Config) error {
	bg, bgCtx := errgroup.WithContext(context.Background())
	bgCtx, stopBg := context.WithCancel(bgCtx)
	for _, run := range p.background {
		bg.Go(func() error { return run(bgCtx) })
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.gw.Serve(gctx, p.devLn, cfg.Server) })
	if p.tlsLn != nil {
		g.Go(func() error { return p.gw.Serve(gctx, p.tlsLn, cfg.Server) })
	}
	g.Go(func() error { return p.dash.Run(gctx) }) // ends its live streams as shutdown begins
	g.Go(func() error {
		mux := p.gw.AdminMux(health.ServeHealth, p.prober.ServeReady, cfg.Profiling)
		p.dash.Register(mux)
		return gateway.ServeAdmin(gctx, p.adminLn, mux)
	})
	err := g.Wait()
	stopBg()
	_ = bg.Wait()
	return err
}

func loadPolicy(file string) (*policy.Policy, error) {
	rules, err := policy.Load(file)
	if err != nil {
		return nil, err
	}
	pol, err := policy.New(rules)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return pol, nil
}

func logStart(log *slog.Logger, cfg Config, up *upstream.Upstream, devLn, adminLn net.Listener) {
	log.Info("picogate serving devices", "listen", devLn.Addr().String(), "admin", adminLn.Addr().String(),
		"upstream", up.URL.String(), "kubeconfig", up.Source, "namespace", cfg.Namespace, "compact", cfg.Gateway.Compact,
		"http2", cfg.Upstream.HTTP2, "gogc", gcSetting("/gc/gogc:percent"), "gomemlimit", gcSetting("/gc/gomemlimit:bytes"))
	if cfg.TLS.Listen != "" {
		log.Info("picogate serving devices over TLS", "listen", cfg.TLS.Listen, "cert", cfg.TLS.CertFile, "shared_ticket_keys", cfg.TLS.TicketKeyFile != "")
	}
	if cfg.Enrollment {
		log.Info("--enrollment: devices may enroll with a token, rotate and deregister; the gateway writes device records", "require_hmac", cfg.Gateway.RequireHMAC)
	}
	if cfg.Gateway.SharedIdentity {
		log.Warn("--shared-identity: devices without a credential are forwarded as " + gateway.SharedUser + ", which every such device shares; its rights are its RBAC's (deploy/rbac-shared.yaml)")
	}
	for _, p := range cfg.Gateway.AllowCIDRs {
		if p.Bits() == 0 {
			log.Warn("--allow-cidr admits every address; restrict it to the devices' LAN", "cidr", p.String())
		}
	}
}

// registryCheck is ready once the registry has synced; a watch failing since then is reported as
// degraded (the last synced registry keeps serving) until the registry's informer lists or watches the
// device records again. It only reads the registry's state: the informer owns it.
func registryCheck(reg *registry.Cache) func(ctx context.Context) error {
	return func(context.Context) error {
		if !reg.HasSynced() {
			return errors.New("device registry not synced yet")
		}
		if at, werr := reg.WatchError(); werr != nil {
			return health.Degraded{Err: fmt.Errorf("serving the registry synced before %s: %w", at.Format(time.RFC3339), werr)}
		}
		return nil
	}
}

// ParseCIDRs parses --allow-cidr values (a bare address means just that address).
func ParseCIDRs(values []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, v := range values {
		p, err := registry.ParseSource(v)
		if err != nil || !p.IsValid() {
			errs = append(errs, fmt.Errorf("--allow-cidr %q: want a CIDR such as 192.168.1.0/24", v))
			continue
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

// tuneGC applies the collector settings unless the environment already chose them. It changes the
// whole process, which is what `picogate serve` is. It returns the memory limit it set, and whether it
// set one (GOMEMLIMIT unset): only then does the limit follow the live heap (memlimit.go).
func tuneGC(percent int, limit int64) (int64, bool) {
	if os.Getenv("GOGC") == "" {
		if percent == 0 {
			percent = 400
		}
		debug.SetGCPercent(percent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if limit == 0 {
			limit = 192 << 20
		}
		debug.SetMemoryLimit(limit)
		return limit, true
	}
	return 0, false
}

// gcSetting reads one of the runtime's collector settings back, as the start-up line reports it.
func gcSetting(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
