// Package serve wires `picogate serve`: the upstream connection, the device registry, the gateway, the
// readiness prober and the two listeners, run together until a signal, then shut down in order.
package serve

import (
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/picogate/picogate/internal/enroll"
	"github.com/picogate/picogate/internal/gateway"
	"github.com/picogate/picogate/internal/health"
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
	Gateway  gateway.Config // Upstream, Transport, Registry and Policy are filled in here
	Server   gateway.ServerConfig

	PolicyFile string // replaces the default device policy
	Profiling  bool   // net/http/pprof on the admin port
	// GCPercent is the Go garbage collector's target (GOGC). Default 400: a proxy's heap is small and
	// short-lived, and collecting it 4× less often saves CPU per request (docs/benchmarks.md); the
	// GOGC environment variable, when set, wins. MemoryLimit (GOMEMLIMIT, bytes) caps the heap softly
	// so the larger target never costs unbounded memory; 0 means 256 MiB unless GOMEMLIMIT is set.
	GCPercent   int
	MemoryLimit int64
	// Enrollment turns on POST /picogate/v1/enroll, /rotate and /deregister: the gateway then writes
	// device records and enrollment tokens (deploy/rbac-enrollment.yaml). Off, it only reads Secrets.
	Enrollment bool
	Logger     *slog.Logger
}

// Run serves until ctx ends. An unusable configuration fails at once with every problem listed; an
// unreachable API server does not: the gateway starts, reports not-ready and keeps retrying, because a
// gateway that exits would be restarted into the same outage and devices would get connection refused
// instead of a 503 with Retry-After.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Listen == "" {
		cfg.Listen = ":6080"
	}
	if cfg.AdminListen == "" {
		cfg.AdminListen = "127.0.0.1:6081"
	}
	if cfg.Namespace == "" {
		cfg.Namespace = registry.DefaultNamespace
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MemoryLimit < 0 {
		return fmt.Errorf("--memory-limit %d: want a number of bytes, 0 for the default", cfg.MemoryLimit)
	}
	tuneGC(cfg.GCPercent, cfg.MemoryLimit)
	if cfg.Upstream.Logger == nil {
		cfg.Upstream.Logger = log
	}
	up, err := upstream.New(cfg.Upstream)
	if err != nil {
		return err
	}
	if cfg.PolicyFile != "" {
		rules, err := policy.Load(cfg.PolicyFile)
		if err != nil {
			return err
		}
		if cfg.Gateway.Policy, err = policy.New(rules); err != nil {
			return fmt.Errorf("%s: %w", cfg.PolicyFile, err)
		}
	}
	var gw *gateway.Gateway
	reg, err := registry.NewCache(registry.CacheConfig{
		Client: up.Client, Namespace: cfg.Namespace, Logger: log,
		OnChange: func(name string, registered bool) {
			if gw != nil {
				gw.DeviceChanged(name, registered)
			}
		},
	})
	if err != nil {
		return err
	}
	gc := cfg.Gateway
	gc.Upstream, gc.Transport, gc.Registry, gc.Logger = up.URL, up.Transport, reg, log
	gc.RegistryNamespace = cfg.Namespace
	if gc.AccessLogger == nil {
		gc.AccessLogger = log
	}
	var enrollSvc *enroll.Service
	if cfg.Enrollment {
		feat, err := enroll.NewFeature(enroll.FeatureConfig{REST: up.REST, Client: up.Client, Registry: reg, Namespace: cfg.Namespace, RequireHMAC: gc.RequireHMAC, Logger: log})
		if err != nil {
			return err
		}
		enrollSvc, gc.Local, gc.OnNextCredential = feat.Service, feat.Routes, feat.Service.Promote
	}
	gw, err = gateway.New(gc)
	if err != nil {
		return err
	}
	prober, err := health.New(health.Config{Logger: log, Checks: []health.Check{
		{Name: "upstream", Probe: health.CredentialCheck(up.Client.AuthenticationV1().SelfSubjectReviews())},
		{Name: "registry", Probe: registryCheck(reg, up, cfg.Namespace)},
	}})
	if err != nil {
		return err
	}
	devLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("device port: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		_ = devLn.Close()
		return fmt.Errorf("admin port: %w", err)
	}
	logStart(log, cfg, up, devLn, adminLn)

	bg, bgCtx := errgroup.WithContext(context.Background())
	bgCtx, stopBg := context.WithCancel(bgCtx)
	bg.Go(func() error { return reg.Run(bgCtx) })
	bg.Go(func() error { return prober.Run(bgCtx) })
	if enrollSvc != nil {
		bg.Go(func() error { return enrollSvc.Run(bgCtx) })
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return gw.Serve(gctx, devLn, cfg.Server) })
	g.Go(func() error {
		return gateway.ServeAdmin(gctx, adminLn, gw.AdminMux(health.ServeHealth, prober.ServeReady, cfg.Profiling))
	})
	err = g.Wait()
	stopBg()
	_ = bg.Wait()
	if err != nil {
		return err
	}
	log.Info("picogate stopped")
	return nil
}

func logStart(log *slog.Logger, cfg Config, up *upstream.Upstream, devLn, adminLn net.Listener) {
	log.Info("picogate serving devices", "listen", devLn.Addr().String(), "admin", adminLn.Addr().String(),
		"upstream", up.URL.String(), "kubeconfig", up.Source, "namespace", cfg.Namespace, "compact", cfg.Gateway.Compact,
		"http2", cfg.Upstream.HTTP2, "gogc", gcSetting("/gc/gogc:percent"), "gomemlimit", gcSetting("/gc/gomemlimit:bytes"))
	if cfg.Enrollment {
		log.Info("--enrollment: devices may enroll with a token, rotate and deregister; the gateway writes device records", "require_hmac", cfg.Gateway.RequireHMAC)
	}
	if cfg.Gateway.SharedIdentity {
		log.Warn("--shared-identity: devices without a credential are forwarded with the gateway's own identity; every such device shares it, as with the seed's nginx")
	}
	for _, p := range cfg.Gateway.AllowCIDRs {
		if p.Bits() == 0 {
			log.Warn("--allow-cidr admits every address; restrict it to the devices' LAN", "cidr", p.String())
		}
	}
}

// registryCheck is ready once the registry has synced; a watch failing since then is reported as
// degraded (the last synced registry keeps serving) until a list in the namespace succeeds again.
func registryCheck(reg *registry.Cache, up *upstream.Upstream, ns string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if !reg.HasSynced() {
			return errors.New("device registry not synced yet")
		}
		werr, at := reg.WatchError()
		if werr == nil {
			return nil
		}
		if _, err := up.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{Limit: 1, LabelSelector: registry.LabelKind + "=" + registry.KindDevice}); err != nil {
			return health.Degraded{Err: fmt.Errorf("serving the registry synced before %s: %w", at.Format(time.RFC3339), err)}
		}
		reg.ClearWatchError()
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
// whole process, which is what `picogate serve` is.
func tuneGC(percent int, limit int64) {
	if os.Getenv("GOGC") == "" {
		if percent == 0 {
			percent = 400
		}
		debug.SetGCPercent(percent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if limit == 0 {
			limit = 256 << 20
		}
		debug.SetMemoryLimit(limit)
	}
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
