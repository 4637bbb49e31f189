// Package heartbeat translates the heartbeats of firmware that keeps its node alive with a Node status
// PATCH every few seconds and never writes a Lease — the reference firmware's pattern — into what a
// kubelet does since KEP-589 ("efficient node heartbeats"): a Lease renewal often, the full Node status
// only when it changed or every report interval.
//
// For such a device the gateway:
//
//   - renews the device's Lease in kube-node-lease, as the device, on a heartbeat when the last renewal
//     is at least RenewInterval old (default GracePeriod/4), creating it with an ownerReference to the
//     Node when it is missing;
//   - writes the Node status, as the device, only when something besides the heartbeat timestamps
//     changed since its last write, when that write is older than ReportInterval (default 5 minutes,
//     the kubelet's nodeStatusReportFrequency), or when the Node upstream may not be what the device
//     reports — its Ready condition differs, or this gateway cannot be sure the node lifecycle
//     controller saw every heartbeat (see Translator.ServeStatusPatch);
//   - stamps lastHeartbeatTime with its own clock (boards have no real-time clock);
//   - answers the device 200 with a small Node (name, uid, resourceVersion and the conditions' type and
//     status as last known upstream), which fits the reference firmware's 2,047-byte receive ring.
//
// State is per gateway replica and per device. A replica that sees a device for the first time writes
// its status once, so a device that moves between replicas costs at most one extra write per move.
package heartbeat

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/picogate/picogate/internal/asdevice"
	"github.com/picogate/picogate/internal/registry"
)

// Defaults.
const (
	// DefaultGracePeriod is kube-controller-manager's --node-monitor-grace-period since Kubernetes 1.32,
	// and k3s's.
	DefaultGracePeriod = 50 * time.Second
	// DefaultReportInterval is the kubelet's nodeStatusReportFrequency.
	DefaultReportInterval = 5 * time.Minute
	// DefaultLeaseDuration is the kubelet's nodeLeaseDurationSeconds.
	DefaultLeaseDuration = 40 * time.Second
)

// LeaseNamespace holds node Leases.
const LeaseNamespace = "kube-node-lease"

// Outcomes of a translated heartbeat, sent to the device in the Picogate-Heartbeat header.
const (
	// Written: the Node status was written upstream (the Lease may have been renewed too).
	Written = "written"
	// Renewed: only the Lease was renewed.
	Renewed = "renewed"
	// Coalesced: nothing was sent upstream; the last renewal is recent enough.
	Coalesced = "coalesced"
	// failed is the metric label of a heartbeat the API server refused or did not answer.
	failed = "failed"
)

// HeaderOutcome is the response header naming what a translated heartbeat did.
const HeaderOutcome = "Picogate-Heartbeat"

// Config configures a Translator. Zero values take the documented defaults.
type Config struct {
	// Upstream makes requests as the device (asdevice.Client). Required.
	Upstream asdevice.Doer
	// GracePeriod is kube-controller-manager's --node-monitor-grace-period: a node whose Lease and
	// Ready heartbeat both stay unchanged this long is marked Unknown. Default 50s.
	GracePeriod time.Duration
	// RenewInterval: a heartbeat renews the Lease when the last renewal is at least this old. Default
	// GracePeriod/4; at most GracePeriod/2. With heartbeats every P, renewals come every RenewInterval
	// to RenewInterval+P, so a device heartbeating at least every GracePeriod/4 gets two renewals or
	// more in every grace period.
	RenewInterval time.Duration
	// ReportInterval: the Node status is written at least this often while the device heartbeats, even
	// if nothing changed (each device's deadline is jittered up to 10% earlier, so a fleet booted
	// together does not write together). Default 5m.
	ReportInterval time.Duration
	// LeaseDuration is the Lease's spec.leaseDurationSeconds. Default 40s.
	LeaseDuration time.Duration
	// CoalesceLeases: a device that renews its own Lease (the device library renews every 10s, as a
	// kubelet does) has a renewal forwarded only when the last one forwarded for it is at least
	// RenewInterval old; the gateway answers the others itself (ownlease.go). picogate serve turns it
	// on; the zero Config forwards every renewal.
	CoalesceLeases bool
	// OnWritten, if set, is called with the API server's answer to a status write or Lease write made
	// as d (the read cache keeps it, so a device's next read of its Node or Lease is current).
	OnWritten func(d *registry.Device, path string, body []byte)
	// Now is the gateway's clock, which stamps lastHeartbeatTime and renewTime. Default time.Now.
	Now func() time.Time
	// Logger; default discards.
	Logger *slog.Logger
}

// Translator translates heartbeats. It is safe for concurrent use.
type Translator struct {
	cfg    Config
	log    *slog.Logger
	seed   maphash.Seed
	states sync.Map // device name → *devState
	// stale is how long after the last successful upstream heartbeat the controller may have missed
	// one: GracePeriod − RenewInterval.
	stale time.Duration

	outcomes                                *prometheus.CounterVec
	written, renewed, coalesced, failedBeat prometheus.Counter

	leaseOutcomes                               *prometheus.CounterVec
	leaseForwarded, leaseCoalesced, leaseFailed prometheus.Counter
}

// New validates cfg, reporting every problem at once, and builds a Translator.
func New(cfg Config) (*Translator, error) {
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = DefaultGracePeriod
	}
	if cfg.RenewInterval == 0 {
		cfg.RenewInterval = cfg.GracePeriod / 4
	}
	if cfg.ReportInterval == 0 {
		cfg.ReportInterval = DefaultReportInterval
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if cfg.Upstream == nil {
		errs = append(errs, errors.New("an upstream (requests as the device) is required"))
	}
	if cfg.GracePeriod < 4*time.Second {
		errs = append(errs, fmt.Errorf("node monitor grace period %v is below 4s", cfg.GracePeriod))
	}
	if cfg.RenewInterval < time.Second || cfg.RenewInterval > cfg.GracePeriod/2 {
		errs = append(errs, fmt.Errorf("lease renew interval %v: want 1s to half the grace period (%v), so one late renewal still leaves the node Ready", cfg.RenewInterval, cfg.GracePeriod/2))
	}
	if cfg.ReportInterval < cfg.GracePeriod {
		errs = append(errs, fmt.Errorf("node status report interval %v is below the grace period %v", cfg.ReportInterval, cfg.GracePeriod))
	}
	if cfg.LeaseDuration < time.Second {
		errs = append(errs, fmt.Errorf("lease duration %v is below 1s", cfg.LeaseDuration))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("invalid heartbeat translation configuration: %w", err)
	}
	t := &Translator{cfg: cfg, log: cfg.Logger.With("component", "heartbeat"), seed: maphash.MakeSeed(), stale: cfg.GracePeriod - cfg.RenewInterval}
	t.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "picogate_heartbeats_total",
		Help: "Translated status-PATCH heartbeats by outcome: written (the Node status), renewed (only the Lease), coalesced (nothing sent upstream), failed."}, []string{"outcome"})
	t.written, t.renewed = t.outcomes.WithLabelValues(Written), t.outcomes.WithLabelValues(Renewed)
	t.coalesced, t.failedBeat = t.outcomes.WithLabelValues(Coalesced), t.outcomes.WithLabelValues(failed)
	t.leaseOutcomes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "picogate_lease_renewals_total",
		Help: "Devices' renewals of their own Lease by outcome: forwarded (to the API server), coalesced (answered by the gateway: the last forwarded one is recent enough), failed."}, []string{"outcome"})
	t.leaseForwarded, t.leaseCoalesced = t.leaseOutcomes.WithLabelValues(Forwarded), t.leaseOutcomes.WithLabelValues(Coalesced)
	t.leaseFailed = t.leaseOutcomes.WithLabelValues(failed)
	return t, nil
}

// Collectors are the translator's metrics, for the gateway's registry.
func (t *Translator) Collectors() []prometheus.Collector {
	return []prometheus.Collector{t.outcomes, t.leaseOutcomes}
}

// RenewInterval is the effective Lease renewal interval (for the start-up log line).
func (t *Translator) RenewInterval() time.Duration { return t.cfg.RenewInterval }

// devState is what a replica knows about one device's node. Guarded by lock, except ownLease.
type devState struct {
	lock chan struct{} // a one-slot lock a waiting request can give up on

	known     bool   // the upstream Node is as this replica last wrote or read it
	sum       uint64 // the last written patch, heartbeat timestamps removed
	uid, rv   string // of the Node, as last known
	conds     []cond // its conditions' type and status, as last known
	writeDue  time.Time
	lastBeat  time.Time // last heartbeat the API server accepted (status write or Lease renewal)
	lastRenew time.Time
	leaseUID  string     // the Node UID this replica last set as the Lease's owner
	lease     leaseState // the device's own Lease, when it keeps one (CoalesceLeases)

	ownLease atomic.Int64 // unix nanoseconds of the device's own last Lease write
	lastOK   atomic.Int64 // lastBeat, in unix nanoseconds, readable without the lock (Heartbeating)
	dirty    atomic.Bool  // the device wrote its Node itself since: known is stale
	// leaseDirty: the device wrote its Lease in a way that was forwarded untouched since: lease is stale
	leaseDirty atomic.Bool
}

type cond struct{ typ, status string }

func (st *devState) ready() string {
	for _, c := range st.conds {
		if c.typ == "Ready" {
			return c.status
		}
	}
	return ""
}

func (st *devState) cond(typ string) (cond, bool) {
	for _, c := range st.conds {
		if c.typ == typ {
			return c, true
		}
	}
	return cond{}, false
}

func (t *Translator) state(name string) *devState {
	if v, ok := t.states.Load(name); ok {
		return v.(*devState)
	}
	v, _ := t.states.LoadOrStore(name, &devState{lock: make(chan struct{}, 1)})
	return v.(*devState)
}

// Forget drops what the translator knows of a device (removed, revoked or rotated): if it comes back,
// its first heartbeat writes its status again.
func (t *Translator) Forget(name string) { t.states.Delete(name) }

// ServeStatusPatch serves one device request if it is a heartbeat to translate, and reports whether it
// did; if not, nothing was written to w and the caller forwards the request. body is the request body,
// already read in full.
//
// A heartbeat is a strategic-merge PATCH of the device's own /api/v1/nodes/NAME/status, without query
// parameters, whose body is {"status":{"conditions":[...], ...}}. A device that writes its own Lease
// (an agent that already heartbeats the KEP-589 way) is left alone: its requests are noted here and
// forwarded untouched for a grace period after its last Lease write; with CoalesceLeases its plain
// renewals are coalesced (serveOwnLease).
//
// The status is written upstream when any of these holds:
//   - this replica has not written it yet, or its last attempt failed;
//   - the last heartbeat the API server accepted is more than GracePeriod − RenewInterval ago: the node
//     lifecycle controller may have marked the node Unknown, and a Lease renewal never sets it back;
//   - the last known Ready status upstream differs from the device's (True when it sends none);
//   - anything in the patch besides lastHeartbeatTime and lastTransitionTime differs from the last
//     written one;
//   - the report interval has passed since the last write.
//
// Otherwise only the Lease is renewed, when due, and a heartbeat within RenewInterval of the last
// renewal is answered without contacting the API server.
func (t *Translator) ServeStatusPatch(w http.ResponseWriter, r *http.Request, d *registry.Device, body []byte) bool {
	if d == nil || r.Method == http.MethodGet || r.Method == http.MethodHead {
		return false
	}
	path := r.URL.Path
	switch {
	case path == leasePath(d.Name) || (r.Method == http.MethodPost && path == leasesPath):
		st := t.state(d.Name)
		st.ownLease.Store(t.cfg.Now().UnixNano())
		if path == leasesPath {
			st.leaseDirty.Store(true) // a create: the Lease may be new
			return false
		}
		return t.cfg.CoalesceLeases && t.serveOwnLease(w, r, d, st, body)
	case path == nodesPath || path == nodePath(d.Name):
		// The device creates (a reboot) or writes its Node itself: what this replica knows may be stale.
		if v, ok := t.states.Load(d.Name); ok {
			v.(*devState).dirty.Store(true)
		}
		return false
	case path != nodePath(d.Name)+"/status":
		return false
	}
	st := t.state(d.Name)
	if at := st.ownLease.Load(); at != 0 && t.cfg.Now().Sub(time.Unix(0, at)) < t.cfg.GracePeriod {
		return false
	}
	var p *patch
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && mt == "application/strategic-merge-patch+json" &&
		r.Method == http.MethodPatch && r.URL.RawQuery == "" {
		p, _ = parsePatch(body, t.seed)
	}
	if p == nil {
		st.dirty.Store(true) // forwarded as it is: it writes the status behind this replica's back
		return false
	}
	ctx := r.Context()
	select {
	case st.lock <- struct{}{}:
	case <-ctx.Done():
		writeUnavailable(w, "the gateway could not take this heartbeat in time")
		return true
	}
	defer func() { <-st.lock }()
	t.serve(ctx, w, r, d, st, p)
	return true
}

// Heartbeating reports whether r is a heartbeat of a board that is already up: its status write (or a
// write of its own Lease, for a device that keeps it) when the API server accepted its heartbeats within
// the grace period (for a Lease-keeping device, when it wrote its Lease within it). The gateway lets
// these go before boots and retries when it is at its limit of requests in flight, so a storm of booting
// boards never turns Ready boards NotReady.
func (t *Translator) Heartbeating(r *http.Request, d *registry.Device) bool {
	if d == nil || (r.Method != http.MethodPatch && r.Method != http.MethodPut) {
		return false
	}
	lease := r.URL.Path == leasePath(d.Name)
	if !lease && r.URL.Path != nodePath(d.Name)+"/status" {
		return false
	}
	v, ok := t.states.Load(d.Name)
	if !ok {
		return false
	}
	st := v.(*devState)
	at := st.lastOK.Load()
	if lease {
		at = st.ownLease.Load()
	}
	return at != 0 && t.cfg.Now().Sub(time.Unix(0, at)) < t.cfg.GracePeriod
}

func (t *Translator) serve(ctx context.Context, w http.ResponseWriter, r *http.Request, d *registry.Device, st *devState, p *patch) {
	now := t.cfg.Now()
	as := asdevice.Identity{User: d.User, Groups: d.Groups}
	ua := r.Header.Get("User-Agent")
	if st.dirty.Swap(false) || (st.known && now.Sub(st.lastBeat) > t.stale) {
		st.known = false // the controller may have missed heartbeats: make sure of the status
	}
	want := p.ready
	if want == "" {
		want = "True"
	}
	outcome := Coalesced
	if !st.known || st.ready() != want || p.sum != st.sum || !now.Before(st.writeDue) {
		res, err := t.cfg.Upstream.Do(ctx, as, asdevice.Request{Method: http.MethodPatch, Path: nodePath(d.Name) + "/status",
			ContentType: "application/strategic-merge-patch+json", Body: p.stamped(now, st), UserAgent: ua})
		if !t.accepted(w, d, "writing node status", res, err) {
			st.known = false
			t.failedBeat.Inc()
			return
		}
		st.known = st.learn(res.Body)
		st.sum, st.lastBeat = p.sum, now
		st.lastOK.Store(now.UnixNano())
		st.writeDue = now.Add(t.cfg.ReportInterval - rand.N(t.cfg.ReportInterval/10+1))
		outcome = Written
		if t.cfg.OnWritten != nil {
			t.cfg.OnWritten(d, nodePath(d.Name), res.Body)
		}
	}
	if now.Sub(st.lastRenew) >= t.cfg.RenewInterval || st.leaseUID != st.uid {
		res, err := t.renew(ctx, as, ua, d.Name, st, now)
		if outcome == Written && (err != nil || res.Code >= 300) {
			// The status write was a heartbeat the controller sees: answer it, renew next time.
			t.log.Debug("renewing lease failed after a status write", "device", d.Name, "code", res.Code, "err", err)
		} else if !t.accepted(w, d, "renewing lease", res, err) {
			st.known = false
			t.failedBeat.Inc()
			return
		} else {
			st.lastRenew, st.lastBeat, st.leaseUID = now, now, st.uid
			st.lastOK.Store(now.UnixNano())
			if outcome == Coalesced {
				outcome = Renewed
			}
			if t.cfg.OnWritten != nil {
				t.cfg.OnWritten(d, leasePath(d.Name), res.Body)
			}
		}
	}
	switch outcome {
	case Written:
		t.written.Inc()
	case Renewed:
		t.renewed.Inc()
	default:
		t.coalesced.Inc()
	}
	writeNode(w, d.Name, st, outcome)
}

// renew renews the Lease with a merge patch (setting the owner when this replica has not yet, or the
// Node was re-created), and creates it when it is missing.
func (t *Translator) renew(ctx context.Context, as asdevice.Identity, ua, name string, st *devState, now time.Time) (asdevice.Response, error) {
	owner := ""
	if st.leaseUID != st.uid {
		owner = st.uid
	}
	patch := asdevice.Request{Method: http.MethodPatch, Path: leasePath(name), ContentType: "application/merge-patch+json",
		Body: leasePatch(name, owner, t.cfg.LeaseDuration, now), UserAgent: ua}
	res, err := t.cfg.Upstream.Do(ctx, as, patch)
	if err != nil || res.Code != http.StatusNotFound {
		return res, err
	}
	res, err = t.cfg.Upstream.Do(ctx, as, asdevice.Request{Method: http.MethodPost, Path: leasesPath, ContentType: "application/json",
		Body: leaseCreate(name, st.uid, t.cfg.LeaseDuration, now), UserAgent: ua})
	if err == nil && res.Code == http.StatusConflict { // created meanwhile by another replica
		return t.cfg.Upstream.Do(ctx, as, patch)
	}
	return res, err
}

// accepted reports whether the API server accepted a write; if not, it answers the device: 503 with
// Retry-After when no answer came (or the gateway's own credential was refused), else the API
// server's own answer.
func (t *Translator) accepted(w http.ResponseWriter, d *registry.Device, what string, res asdevice.Response, err error) bool {
	switch {
	case err != nil:
		t.log.Warn("heartbeat: "+what+" failed", "device", d.Name, "err", err)
		writeUnavailable(w, "the Kubernetes API server is unavailable")
		return false
	case res.Code == http.StatusUnauthorized:
		t.log.Error("heartbeat: the API server refused the gateway's own credential", "device", d.Name)
		writeUnavailable(w, "the gateway's credential was refused by the Kubernetes API server")
		return false
	case res.Code >= 300:
		t.log.Debug("heartbeat: "+what+" refused", "device", d.Name, "code", res.Code)
		relay(w, res)
		return false
	}
	return true
}

const nodesPath = "/api/v1/nodes"

const leasesPath = "/apis/coordination.k8s.io/v1/namespaces/" + LeaseNamespace + "/leases"

func nodePath(name string) string  { return "/api/v1/nodes/" + name }
func leasePath(name string) string { return leasesPath + "/" + name }
