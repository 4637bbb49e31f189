// Package gateway is picogate's device-facing HTTP server: plain HTTP from microcontrollers on the LAN,
// forwarded to the Kubernetes API server over TLS. Every request, forwarded or served by the gateway
// itself, goes down one straight line of steps. Each step does one thing, is tested alone, and hands the
// steps after it an immutable value (in brackets), written once into the request's exchange (values.go):
//
//	observe        the access-log record and metrics                              [record]
//	sourceCheck    the client's address is in an allowed network (403)             [client]
//	route          a local endpoint under /picogate/v1/ (404 if unknown), or forward [route]
//	authenticate   who: a device (token, address; a signature's header only),
//	               the shared identity, or nobody for anonymous endpoints (401)    [Identity]
//	authorize      the policy: path, query, upgrades; device endpoints need one    [grant]
//	sourceLimit    per source address, for requests without a device (429)
//	deviceRate     per device (429)                                                 [charge]
//	admit          global caps on in-flight requests and watches (503)
//	deviceWatches  per device cap on watches; ended when its credential changes (429)
//	readBody       the one read of the body, within its deadline and size (408, 413),
//	               unverified bodies within a global budget (503)                   [Body]
//	verify         a signature over the body, its nonce (401)                       [Identity]
//	inspect        checks of the content (Config.Checks)
//	deadline       how long the rest may take
//	dispatch       the local endpoint's handler, or on to the proxy
//	compaction     MCU-sized answers, fitted to a ring-limited client
//	answer         the gateway answers some device requests itself (Config.Answers:
//	               heartbeat translation, cached reads), as the device upstream
//	proxy          rewrite → upstream
//
// Every refusal is a status.Error written by one function (Refuse), which also records the reason and
// closes the connection when the body was not read. The limits come before the body: a request over
// them costs no body buffer and no body time, and a signed request's body is read before its signature
// can be checked only within the budget.
//
// A device is forwarded as its own node (Impersonate-User system:node:NAME, groups system:nodes and
// picogate:devices), so the API server's Node authorizer and NodeRestriction confine it; the policy in
// front is defense in depth. With --shared-identity a request without a credential is forwarded as
// SharedUser, whose RBAC is the cluster's to keep small. The gateway's own health and metrics are served
// on a separate admin port, never on the device port.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/picogate/picogate/internal/dashboard"
	"github.com/picogate/picogate/internal/policy"
	"github.com/picogate/picogate/internal/registry"
)

// DefaultMaxInFlight is Config.MaxInFlight's default.
const DefaultMaxInFlight = 512

// Config configures a Gateway. Zero values take the documented defaults.
type Config struct {
	// Upstream is the API server's base URL. Required.
	Upstream *url.URL
	// Transport carries forwarded requests with the gateway's own credential. Required.
	Transport http.RoundTripper
	// WatchTransport, if set, carries forwarded watches instead of Transport. picogate serve gives
	// watches HTTP/2, which multiplexes thousands of them over a few connections, and other requests a
	// pool of HTTP/1.1 connections, which costs the gateway less CPU per request.
	WatchTransport http.RoundTripper
	// Registry identifies devices. Nil means no device records: only the shared identity works.
	Registry Registry
	// SharedIdentity forwards requests without a device credential as SharedUser (group SharedGroup),
	// limited per source address, for firmware that sends no credential. Devices that do authenticate
	// are still forwarded as themselves.
	SharedIdentity bool
	// AllowCIDRs are the source networks allowed to connect. Default: loopback, RFC 1918, IPv6 ULA and
	// link-local (DefaultAllowCIDRs).
	AllowCIDRs []netip.Prefix
	// Policy is the device allowlist. Default policy.Default().
	Policy *policy.Policy
	// RegistryNamespace holds the device records. Secrets there are refused to every device whatever
	// the policy and identity say: with --shared-identity the gateway's own credential could read them.
	// Default picogate-system.
	RegistryNamespace string
	// Compact turns on MCU-sized responses (picogate serve's default is on; the zero Config is off so a
	// test or embedder opts in explicitly).
	Compact bool
	// MaxCompactBytes caps the response buffered for compaction. Default 256 KiB.
	MaxCompactBytes int
	// RingBytes is what a ring-limited client keeps of an answer, status line and headers included.
	// Default 2047 (DefaultRingBytes), the reference firmware's receive ring. Every device answer over it
	// is counted (picogate_responses_over_ring_total).
	RingBytes int
	// RingUserAgents are the User-Agent prefixes of ring-limited clients, whose compacted answers are
	// made to fit RingBytes (see fitRing). picogate serve's default is the reference firmware's,
	// "k3s-pico-node/"; none here.
	RingUserAgents []string
	// MaxBodyBytes caps request bodies (413 beyond). Default 64 KiB.
	MaxBodyBytes int64
	// UnverifiedBodyBudget caps the bytes held at once for bodies whose sender is not yet known: signed
	// requests before their signature is checked, the shared identity, anonymous endpoints (503 beyond).
	// Each such body counts at least 16 KiB. Default 4 MiB.
	UnverifiedBodyBudget int64
	// BodyTimeout bounds receiving a request body. Default 10s.
	BodyTimeout time.Duration
	// UpstreamTimeout bounds a non-watch request's round trip to the API server. Default 4.5s, so that
	// with the gateway's own work and the network a device has its answer within 5s.
	UpstreamTimeout time.Duration
	// LocalTimeout bounds a local endpoint's handler (the context it gets). Default 15s, above
	// enrollment's own 10s of API work.
	LocalTimeout time.Duration
	// WriteTimeout bounds each write to a device (for watches, each event). Default 30s.
	WriteTimeout time.Duration
	// MaxInFlight caps concurrent non-watch requests (503 beyond). Default 512.
	MaxInFlight int
	// MaxWatches caps concurrent watches (503 beyond). Default 20000.
	MaxWatches int
	// MaxDeviceWatches caps each device's concurrent watches (429 beyond). Default 4: the reference
	// firmware holds one.
	MaxDeviceWatches int
	// MaxWatchTimeout caps a watch's timeoutSeconds: larger or absent values are rewritten down to it,
	// and the gateway ends a watch the API server has not ended by then. Default 30m.
	MaxWatchTimeout time.Duration
	// DeviceRate and DeviceBurst are each device's rate limit (requests/s, burst), and each source
	// address's for requests without a device credential. Default 5 and 20.
	DeviceRate  float64
	DeviceBurst int
	// SourceMaxInFlight caps the concurrent requests, watches included, of one source address without
	// a device credential (429 beyond). Default 8.
	SourceMaxInFlight int
	// MaxSources caps the source addresses whose limits are kept at once (503 for a new one beyond,
	// while every one held is busy). Default 4096.
	MaxSources int
	// RequireHMAC refuses every device request that is not signed: token and ip-mode devices get 401.
	RequireHMAC bool
	// HMACWindow is how far a signed request's timestamp may be from the gateway's clock, either way.
	// Default 30s.
	HMACWindow time.Duration
	// NonceCacheSize bounds the nonces remembered per hmac device. Default hmacauth.DefaultNonceCacheSize.
	NonceCacheSize int
	// OnNextCredential, if set, is called without blocking when a device authenticates with the
	// credential a rotation issued (used: the token's hash or the key), so the rotation can be completed.
	OnNextCredential func(name string, used []byte)
	// Local are the gateway's own endpoints beyond the built-in GET /picogate/v1/time (enrollment).
	Local []LocalRoute
	// Checks inspect each request's content before it is forwarded or served (see Check).
	Checks []Check
	// Answers may answer device requests themselves instead of forwarding them (see Answer).
	Answers []Answer
	// WatchAnswers may serve device watches themselves instead of relaying them (the shared pod watch,
	// podwatch.Hub.ServeWatch), after the watch caps. One that takes a watch writes the stream: it
	// flushes each event and ends when the request's context does.
	WatchAnswers []Answer
	// Forwarded, if set, is asked about each device request about to be forwarded; when it returns a
	// function, that is told the status the API server answered with (the shared pod watch learns from a
	// device's own pod list that it may list them). Both run on the request's goroutine: no blocking.
	Forwarded func(r *http.Request, d *registry.Device) func(code int)
	// Priority, if set, names the requests that go first when the gateway is at MaxInFlight: heartbeats
	// of boards that are already up (heartbeat.Translator.Heartbeating). A quarter of MaxInFlight is
	// then kept for them, and such a request waits up to AdmitWait for a slot before it is refused.
	Priority func(r *http.Request, d *registry.Device) bool
	// AdmitWait bounds a priority request's wait for a slot. Default 500ms, so with UpstreamTimeout a
	// device still has its answer within 5s.
	AdmitWait time.Duration
	// Collectors are served with the gateway's metrics on the admin port (the answers' own metrics).
	Collectors []prometheus.Collector
	// Now is the clock signed requests are checked against. Default time.Now.
	Now func() time.Time
	// AccessLog writes one log line per request. picogate serve turns it on.
	AccessLog bool
	// DeviceMetrics exports series per registered device (picogate_device_requests_total,
	// picogate_device_rate_limited_total, picogate_device_last_seen_timestamp_seconds). They cost the
	// gateway about 3.5 KB per device and Prometheus three series or more per device, so a fleet of
	// thousands may do without them: the dashboard shows the same per device. picogate serve turns it on.
	DeviceMetrics bool
	// OnRequest, if set, is given every finished request (the fleet dashboard's Record; never a
	// credential). It runs on the request's goroutine, so it must not block.
	OnRequest func(dashboard.Event)
	// Logger receives the gateway's logs; AccessLogger the access log (default Logger).
	Logger, AccessLogger *slog.Logger
	// AccessLogWriter, if set, receives the access log instead of AccessLogger, written by the gateway
	// itself: each line exactly as slog's TextHandler (JSONHandler with AccessLogJSON) would write it,
	// at a fraction of the cost. Its lines are at levels INFO and WARN (5xx), so set it only when the
	// log level lets INFO through.
	AccessLogWriter io.Writer
	AccessLogJSON   bool
}

// DefaultAllowCIDRs are the networks a LAN device can come from.
func DefaultAllowCIDRs() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "169.254.0.0/16", "fe80::/10"} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// Gateway serves devices.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	access *slog.Logger
	// accessOut writes the access log when Config.AccessLogWriter is set.
	accessOut *accessLog
	registry  Registry
	policy    *policy.Policy
	metrics   *metrics
	proxy     *httputil.ReverseProxy
	handler   http.Handler
	states    deviceStates
	sources   *sources
	locals    localRoutes

	registrySecrets string // path prefix of the device records, refused to devices

	sharedUser, sharedGroups []string // the Impersonate- values of the shared identity

	inflight, watches atomic.Int64
	bodies            *bodyPool
	unverified        *budget
	respBufs          *sync.Pool

	watchCtx   context.Context
	stopWatchs context.CancelFunc
}

// New validates cfg, reporting every problem at once, and builds the gateway.
func New(cfg Config) (*Gateway, error) {
	if cfg.AllowCIDRs == nil {
		cfg.AllowCIDRs = DefaultAllowCIDRs()
	}
	setDefault(&cfg.MaxCompactBytes, 256<<10)
	setDefault(&cfg.RingBytes, DefaultRingBytes)
	setDefault(&cfg.MaxBodyBytes, 64<<10)
	setDefault(&cfg.UnverifiedBodyBudget, 4<<20)
	setDefault(&cfg.BodyTimeout, 10*time.Second)
	setDefault(&cfg.UpstreamTimeout, 4500*time.Millisecond)
	setDefault(&cfg.AdmitWait, 500*time.Millisecond)
	setDefault(&cfg.LocalTimeout, 15*time.Second)
	setDefault(&cfg.WriteTimeout, 30*time.Second)
	setDefault(&cfg.MaxInFlight, DefaultMaxInFlight)
	setDefault(&cfg.MaxWatches, 20000)
	setDefault(&cfg.MaxDeviceWatches, 4)
	setDefault(&cfg.MaxWatchTimeout, 30*time.Minute)
	setDefault(&cfg.DeviceRate, 5)
	setDefault(&cfg.DeviceBurst, 20)
	setDefault(&cfg.SourceMaxInFlight, 8)
	setDefault(&cfg.MaxSources, 4096)
	setDefault(&cfg.HMACWindow, 30*time.Second)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	setDefault(&cfg.RegistryNamespace, "picogate-system")
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AccessLogger == nil {
		cfg.AccessLogger = cfg.Logger
	}
	var errs []error
	if cfg.Upstream == nil || cfg.Upstream.Host == "" {
		errs = append(errs, errors.New("upstream URL is required"))
	}
	if cfg.Transport == nil {
		errs = append(errs, errors.New("upstream transport is required"))
	}
	if cfg.Registry == nil && !cfg.SharedIdentity {
		errs = append(errs, errors.New("no device registry and no shared identity: nobody could be forwarded"))
	}
	if cfg.RequireHMAC && cfg.SharedIdentity {
		errs = append(errs, errors.New("require hmac and shared identity contradict each other: unsigned requests would be both refused and forwarded"))
	}
	if cfg.HMACWindow < time.Second {
		errs = append(errs, fmt.Errorf("hmac window %v is below 1s", cfg.HMACWindow))
	}
	for _, rt := range cfg.Local {
		if !strings.HasPrefix(rt.Path, LocalPrefix) || rt.Method == "" || rt.Handler == nil || rt.Name == "" {
			errs = append(errs, fmt.Errorf("local route %s %s: want a method, a name, a handler and a path under %s", rt.Method, rt.Path, LocalPrefix))
		}
	}
	if len(cfg.AllowCIDRs) == 0 {
		errs = append(errs, errors.New("allowed source networks are empty: every device would be refused"))
	}
	if cfg.MaxCompactBytes < 4096 {
		errs = append(errs, fmt.Errorf("compact max bytes %d is below 4096", cfg.MaxCompactBytes))
	}
	if cfg.RingBytes < 512 {
		errs = append(errs, fmt.Errorf("ring bytes %d is below 512: no answer would fit", cfg.RingBytes))
	}
	if cfg.MaxWatchTimeout < time.Second {
		errs = append(errs, fmt.Errorf("max watch timeout %v is below 1s", cfg.MaxWatchTimeout))
	}
	for name, v := range map[string]float64{"max body bytes": float64(cfg.MaxBodyBytes), "max in-flight": float64(cfg.MaxInFlight),
		"max watches": float64(cfg.MaxWatches), "device rate": cfg.DeviceRate, "device burst": float64(cfg.DeviceBurst),
		"body timeout": float64(cfg.BodyTimeout), "upstream timeout": float64(cfg.UpstreamTimeout), "write timeout": float64(cfg.WriteTimeout),
		"unverified body budget": float64(cfg.UnverifiedBodyBudget), "local timeout": float64(cfg.LocalTimeout),
		"max device watches": float64(cfg.MaxDeviceWatches), "source max in-flight": float64(cfg.SourceMaxInFlight), "max sources": float64(cfg.MaxSources),
		"admit wait": float64(cfg.AdmitWait)} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", name))
		}
	}
	if cfg.Policy == nil {
		p, err := policy.New(policy.Default())
		if err != nil {
			errs = append(errs, err)
		}
		cfg.Policy = p
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("invalid gateway configuration: %w", err)
	}
	g := &Gateway{
		cfg:      cfg,
		log:      cfg.Logger,
		access:   cfg.AccessLogger,
		registry: cfg.Registry,
		policy:   cfg.Policy,
		metrics:  newMetrics(cfg.DeviceMetrics),
		respBufs: newBufPool(16 << 10),
		bodies:   newBodyPool(),

		unverified:   newBudget(cfg.UnverifiedBodyBudget),
		sources:      newSources(cfg.MaxSources, cfg.SourceMaxInFlight, cfg.DeviceRate, cfg.DeviceBurst),
		sharedUser:   []string{SharedUser},
		sharedGroups: []string{SharedGroup},
	}
	for _, c := range cfg.Collectors {
		if err := g.metrics.reg.Register(c); err != nil {
			return nil, fmt.Errorf("invalid gateway configuration: metrics: %w", err)
		}
	}
	if cfg.AccessLogWriter != nil {
		g.accessOut = newAccessLog(cfg.AccessLogWriter, cfg.AccessLogJSON)
	}
	g.registrySecrets = "/api/v1/namespaces/" + cfg.RegistryNamespace + "/secrets"
	g.states.g = g
	g.watchCtx, g.stopWatchs = context.WithCancel(context.Background())
	g.proxy = g.newProxy()
	g.locals = newLocalRoutes(g.timeRoute(), cfg.Local)
	g.handler = chain(g.proxy, g.observe, g.sourceCheck, g.route, g.authenticate, g.authorize,
		g.sourceLimit, g.deviceRate, g.admit, g.deviceWatches, g.readBody, g.verify, g.inspect, g.deadline,
		g.dispatch, g.compaction, g.answer)
	return g, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// chain composes middlewares so the first listed is outermost.
func chain(h http.Handler, mws ...func(http.Handler) http.Handler) http.Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// Handler is the device-facing handler.
func (g *Gateway) Handler() http.Handler { return g.handler }

// DeviceChanged is the registry's OnChange hook: a rotated, revoked or deleted device's open watches end.
func (g *Gateway) DeviceChanged(name string, stillRegistered bool) {
	g.states.changed(name, stillRegistered)
}

// EndWatches ends every open watch (shutdown): devices see their streams close and reconnect elsewhere.
func (g *Gateway) EndWatches() { g.stopWatchs() }
