// Package readcache answers the GETs devices repeat — the reference firmware's ConfigMap every 30
// seconds, a device's own Node and Lease — from the gateway's memory, so a fleet polling its
// configuration costs the API server a few reads a minute instead of one per device per poll.
//
// Two bounds make a cached answer safe:
//
//   - Staleness: an object is served only if it was read from the API server at most MaxStaleness ago
//     (default 10s). An older one is read again, as the device asking.
//   - Permission: a device is served a cached object only if the API server answered that device's own
//     read of it (made as the device, impersonated) at most AuthzWindow ago (default 2 minutes). A device
//     that was never allowed to read an object never receives it from the cache: its first read goes to
//     the API server, which decides. A refused read (403, 404) drops the device's permission at once; a
//     device revoked, rotated or removed loses all of them at once (Forget). A permission withdrawn in
//     RBAC alone takes effect within AuthzWindow.
//
// Answers carry an ETag made from the object's resourceVersion; a request with a matching
// If-None-Match gets 304 Not Modified without a body, so a board that remembers the ETag does not even
// receive the object again.
package readcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/picogate/picogate/internal/asdevice"
	"github.com/picogate/picogate/internal/compact"
	"github.com/picogate/picogate/internal/registry"
	"github.com/picogate/picogate/internal/status"
)

// Defaults.
const (
	DefaultMaxStaleness = 10 * time.Second
	DefaultAuthzWindow  = 2 * time.Minute
	DefaultMaxBytes     = 16 << 20
)

// HeaderCache names, on a cached read's answer, whether it came from memory ("hit") or from the API
// server ("miss").
const HeaderCache = "Picogate-Cache"

// Config configures a Cache. Zero values take the documented defaults.
type Config struct {
	// Upstream reads as the device (asdevice.Client). Required.
	Upstream asdevice.Doer
	// MaxStaleness is the oldest an answer from memory may be. Default 10s.
	MaxStaleness time.Duration
	// AuthzWindow is how long the API server's answer to a device's own read lets the device be served
	// that object from memory. Default 2m.
	AuthzWindow time.Duration
	// MaxBytes caps the objects held, in bytes; objects beyond it are read through, not kept.
	// Default 16 MiB.
	MaxBytes int64
	// Now is the gateway's clock. Default time.Now.
	Now func() time.Time
	// Logger; default discards.
	Logger *slog.Logger
}

// Cache is the read cache. It is safe for concurrent use.
type Cache struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	entries map[string]*entry // API path → object
	bytes   atomic.Int64
	devices sync.Map // device name → *grants

	results                   *prometheus.CounterVec
	hits, misses, refused, na prometheus.Counter
}

// entry is one object as last read from the API server.
type entry struct {
	mu      sync.Mutex
	body    []byte // compacted JSON; never modified once stored, a new read stores a new slice
	etag    string
	fetched time.Time // zero: nothing held
}

// grants are a device's permissions: for each object, when the API server last answered the device's
// own read of it.
type grants struct {
	mu sync.Mutex
	m  map[*entry]time.Time
}

// New validates cfg, reporting every problem at once, and builds a Cache.
func New(cfg Config) (*Cache, error) {
	if cfg.MaxStaleness == 0 {
		cfg.MaxStaleness = DefaultMaxStaleness
	}
	if cfg.AuthzWindow == 0 {
		cfg.AuthzWindow = DefaultAuthzWindow
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if cfg.Upstream == nil {
		errs = append(errs, errors.New("an upstream (reads as the device) is required"))
	}
	if cfg.MaxStaleness < 0 || cfg.MaxStaleness > time.Hour {
		errs = append(errs, fmt.Errorf("max staleness %v: want 0 to 1h", cfg.MaxStaleness))
	}
	if cfg.AuthzWindow < 0 || cfg.AuthzWindow > time.Hour {
		errs = append(errs, fmt.Errorf("authorization window %v: want 0 to 1h", cfg.AuthzWindow))
	}
	if cfg.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("max bytes %d is negative", cfg.MaxBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("invalid read cache configuration: %w", err)
	}
	c := &Cache{cfg: cfg, log: cfg.Logger.With("component", "readcache"), entries: map[string]*entry{}}
	c.results = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "picogate_read_cache_requests_total",
		Help: "Cacheable device reads by result: hit (from memory), miss (read from the API server as the device), refused (the API server said no), unavailable."}, []string{"result"})
	c.hits, c.misses = c.results.WithLabelValues("hit"), c.results.WithLabelValues("miss")
	c.refused, c.na = c.results.WithLabelValues("refused"), c.results.WithLabelValues("unavailable")
	return c, nil
}

// Collectors are the cache's metrics, for the gateway's registry: reads by result, and the objects and
// bytes held.
func (c *Cache) Collectors() []prometheus.Collector {
	return []prometheus.Collector{c.results,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "picogate_read_cache_objects", Help: "Objects the read cache holds."},
			func() float64 { n, _ := c.Len(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "picogate_read_cache_bytes", Help: "Bytes of the objects the read cache holds."},
			func() float64 { return float64(c.bytes.Load()) }),
	}
}

// Cacheable reports whether a GET of path by the device named self is one the cache serves: a
// ConfigMap, the device's own Node, or its own Lease.
func Cacheable(path, self string) bool {
	switch {
	case path == "/api/v1/nodes/"+self,
		path == "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"+self:
		return true
	case strings.HasPrefix(path, "/api/v1/namespaces/"):
		// /api/v1/namespaces/NS/configmaps/NAME
		ns, rest, ok := strings.Cut(path[len("/api/v1/namespaces/"):], "/")
		name, ok2 := strings.CutPrefix(rest, "configmaps/")
		return ok && ok2 && ns != "" && name != "" && !strings.Contains(name, "/")
	}
	return false
}

// ServeGet serves one device request from the cache if it is a read the cache handles, and reports
// whether it did; if not, nothing was written to w and the caller forwards the request.
func (c *Cache) ServeGet(w http.ResponseWriter, r *http.Request, d *registry.Device) bool {
	if d == nil || r.Method != http.MethodGet || r.URL.RawQuery != "" || !Cacheable(r.URL.Path, d.Name) || !acceptsJSON(r.Header.Get("Accept")) {
		return false
	}
	path := r.URL.Path
	now := c.cfg.Now()
	e := c.entry(path)
	g := c.grantsOf(d.Name)
	if body, etag, ok := e.fresh(now.Add(-c.cfg.MaxStaleness)); ok && g.allowed(e, now.Add(-c.cfg.AuthzWindow)) {
		c.hits.Inc()
		answer(w, r, body, etag, "hit")
		return true
	}
	res, err := c.cfg.Upstream.Do(r.Context(), asdevice.Identity{User: d.User, Groups: d.Groups},
		asdevice.Request{Method: http.MethodGet, Path: path, UserAgent: r.Header.Get("User-Agent")})
	switch {
	case err != nil:
		c.na.Inc()
		c.log.Warn("cached read failed", "device", d.Name, "path", path, "err", err)
		status.WriteRetry(w, http.StatusServiceUnavailable, "the Kubernetes API server is unavailable", retryAfter())
	case res.Code == http.StatusUnauthorized:
		c.na.Inc()
		c.log.Error("the API server refused the gateway's own credential", "device", d.Name)
		status.WriteRetry(w, http.StatusServiceUnavailable, "the gateway's credential was refused by the Kubernetes API server", retryAfter())
	case res.Code == http.StatusOK:
		body, etag := c.store(e, res.Body, now)
		g.grant(e, now)
		c.misses.Inc()
		answer(w, r, body, etag, "miss")
	default:
		c.refused.Inc()
		if res.Code < 500 && res.Code != http.StatusTooManyRequests {
			g.revoke(e) // the API server said no (or no such object) to this device
		}
		if res.Code == http.StatusNotFound || res.Code == http.StatusGone {
			c.clear(e)
		}
		relay(w, res)
	}
	return true
}

// Observe takes an object the API server answered a write by d with (heartbeat translation's status
// write or Lease renewal): if the cache holds that object, it is replaced, and d may read it.
func (c *Cache) Observe(d *registry.Device, path string, body []byte) {
	c.mu.Lock()
	e := c.entries[path]
	c.mu.Unlock()
	if e == nil {
		return
	}
	now := c.cfg.Now()
	c.store(e, body, now)
	c.grantsOf(d.Name).grant(e, now)
}

// Forget drops every permission of a device (rotated, revoked or removed): its next read of anything
// goes to the API server. A removed device's own Node and Lease are dropped too.
func (c *Cache) Forget(name string, stillRegistered bool) {
	c.devices.Delete(name)
	if stillRegistered {
		return
	}
	for _, p := range []string{"/api/v1/nodes/" + name, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/" + name} {
		c.mu.Lock()
		e := c.entries[p]
		delete(c.entries, p)
		c.mu.Unlock()
		if e != nil {
			c.clear(e)
		}
	}
}

// Run sweeps, until ctx ends, what can no longer be served: the bodies of objects older than
// MaxStaleness, objects older than AuthzWindow (every permission to them has expired too, since a
// permission is never newer than the read that gave it) and permissions older than AuthzWindow, so
// memory follows the devices that read, not those that once did.
func (c *Cache) Run(ctx context.Context) error {
	every := min(c.cfg.AuthzWindow, time.Minute)
	if every <= 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			c.sweep(c.cfg.Now())
		}
	}
}

func (c *Cache) sweep(now time.Time) {
	c.mu.Lock()
	var stale []*entry
	for p, e := range c.entries {
		e.mu.Lock()
		fetched := e.fetched
		e.mu.Unlock()
		switch {
		case fetched.Before(now.Add(-c.cfg.AuthzWindow)):
			delete(c.entries, p)
			stale = append(stale, e)
		case fetched.Before(now.Add(-c.cfg.MaxStaleness)):
			// Kept, so the permissions given for it stay valid; only its body is let go.
			stale = append(stale, e)
		}
	}
	c.mu.Unlock()
	for _, e := range stale {
		c.clear(e)
	}
	c.devices.Range(func(k, v any) bool {
		g := v.(*grants)
		g.mu.Lock()
		for e, at := range g.m {
			if at.Before(now.Add(-c.cfg.AuthzWindow)) {
				delete(g.m, e)
			}
		}
		empty := len(g.m) == 0
		g.mu.Unlock()
		if empty {
			c.devices.CompareAndDelete(k, v)
		}
		return true
	})
}

// Len is the number of objects held and their size in bytes.
func (c *Cache) Len() (objects int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries), c.bytes.Load()
}

func (c *Cache) entry(path string) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[path]
	if e == nil {
		e = &entry{}
		c.entries[path] = e
	}
	return e
}

func (c *Cache) grantsOf(name string) *grants {
	if v, ok := c.devices.Load(name); ok {
		return v.(*grants)
	}
	v, _ := c.devices.LoadOrStore(name, &grants{m: map[*entry]time.Time{}})
	return v.(*grants)
}

// store keeps a fresh read of e, compacted, within the byte budget, and returns what to answer.
func (c *Cache) store(e *entry, raw []byte, now time.Time) (body []byte, etag string) {
	body = raw
	if b, err := compact.Append(make([]byte, 0, len(raw)), raw); err == nil {
		body = b
	}
	etag = etagOf(body)
	e.mu.Lock()
	defer e.mu.Unlock()
	delta := int64(len(body) - len(e.body))
	if c.bytes.Load()+delta > c.cfg.MaxBytes {
		c.bytes.Add(-int64(len(e.body)))
		e.body, e.etag, e.fetched = nil, "", time.Time{}
		return body, etag
	}
	c.bytes.Add(delta)
	e.body, e.etag, e.fetched = body, etag, now
	return body, etag
}

func (c *Cache) clear(e *entry) {
	e.mu.Lock()
	c.bytes.Add(-int64(len(e.body)))
	e.body, e.etag, e.fetched = nil, "", time.Time{}
	e.mu.Unlock()
}

// fresh returns the object if it is held and was read after since.
func (e *entry) fresh(since time.Time) ([]byte, string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.body == nil || e.fetched.Before(since) {
		return nil, "", false
	}
	return e.body, e.etag, true
}

func (g *grants) allowed(e *entry, since time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	at, ok := g.m[e]
	return ok && !at.Before(since)
}

func (g *grants) grant(e *entry, now time.Time) {
	g.mu.Lock()
	g.m[e] = now
	g.mu.Unlock()
}

func (g *grants) revoke(e *entry) {
	g.mu.Lock()
	delete(g.m, e)
	g.mu.Unlock()
}

// etagOf is the strong ETag of an object: its resourceVersion, quoted; "" without one.
func etagOf(body []byte) string {
	var o struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if json.Unmarshal(body, &o) != nil || o.Metadata.ResourceVersion == "" {
		return ""
	}
	return strconv.Quote(o.Metadata.ResourceVersion)
}

// answer writes the object, or 304 when the request's If-None-Match names its ETag.
func answer(w http.ResponseWriter, r *http.Request, body []byte, etag, how string) {
	h := w.Header()
	h.Set(HeaderCache, how)
	if etag != "" {
		h.Set("ETag", etag)
		if matches(r.Header.Values("If-None-Match"), etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// matches reports whether an If-None-Match header lists etag (weak comparison, as RFC 9110 asks for
// If-None-Match) or is "*".
func matches(values []string, etag string) bool {
	for _, v := range values {
		for tag := range strings.SplitSeq(v, ",") {
			tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
			if tag == etag || tag == "*" {
				return true
			}
		}
	}
	return false
}

// acceptsJSON reports whether an Accept header lets the answer be JSON (what the cache holds).
func acceptsJSON(accept string) bool {
	if accept == "" {
		return true
	}
	for part := range strings.SplitSeq(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && (mt == "application/json" || mt == "*/*" || mt == "application/*") {
			return true
		}
	}
	return false
}

// relay answers with the API server's own answer, compacted, with a Content-Length.
func relay(w http.ResponseWriter, res asdevice.Response) {
	body := res.Body
	if b, err := compact.Append(nil, body); err == nil {
		body = b
		w.Header().Set("Content-Type", "application/json")
	}
	if res.RetryAfter != "" {
		w.Header().Set("Retry-After", res.RetryAfter)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(res.Code)
	_, _ = w.Write(body)
}

// retryAfter is how long a device is asked to wait after a 503: 3 to 7 whole seconds, at random, so a
// fleet refused at one moment does not come back at one moment (as heartbeat.RetryAfter).
func retryAfter() time.Duration { return 3*time.Second + time.Duration(rand.IntN(5))*time.Second }
