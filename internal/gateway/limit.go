package gateway

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/picogate/picogate/internal/status"
)

// The limits come before the body is read, so a request over any of them costs the gateway no body
// buffer and no body time: per source (requests without a device), per device (rate), then global
// (in-flight requests or watches), then per device again (watches). Each is one step.

// takeToken spends one token of l at now, or says when one will be there.
func takeToken(l *rate.Limiter, now time.Time) (time.Duration, bool) {
	res := l.ReserveN(now, 1)
	if !res.OK() {
		return time.Second, false
	}
	if delay := res.DelayFrom(now); delay > 0 {
		res.CancelAt(now)
		return max(delay, time.Second), false
	}
	return 0, true
}

// deviceRate spends one request of the device's rate limit (429 with Retry-After beyond: a hammering
// device only ever spends its own budget). For a signed request not yet verified it hands the token on
// as a charge (only then), which verify gives back if the signature is forged.
func (g *Gateway) deviceRate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := identityFrom(r)
		if id.kind != deviceIdentity {
			next.ServeHTTP(w, r)
			return
		}
		now := time.Now()
		res := id.state.limiter.ReserveN(now, 1)
		if !res.OK() || res.DelayFrom(now) > 0 {
			retry := max(res.DelayFrom(now), time.Second)
			res.CancelAt(now)
			id.state.rateLimited.Inc()
			refuse(w, r, grantFrom(r).rule, &status.Error{Code: http.StatusTooManyRequests, Message: "rate limit exceeded for node " + id.device.Name, RetryAfter: retry})
			return
		}
		if id.claim != nil {
			r = with(r, chargeKey, charge{res: res, at: now})
		}
		next.ServeHTTP(w, r)
	})
}

// admit enforces the gateway's global caps: concurrent non-watch requests (MaxInFlight) or concurrent
// watches (MaxWatches), 503 with Retry-After beyond. With Config.Priority, a quarter of MaxInFlight is
// kept for the priority requests (heartbeats of boards already up), which also wait up to AdmitWait for
// a slot: when the API server is the bottleneck, a storm of booting boards and retries is refused first
// and never turns Ready boards NotReady. The Retry-After of a refusal is spread over 3 to 7 seconds, so
// the refused do not come back together.
func (g *Gateway) admit(next http.Handler) http.Handler {
	var reserve int64
	if g.cfg.Priority != nil {
		reserve = int64(g.cfg.MaxInFlight / 4)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gr := grantFrom(r)
		sem, limit, what := &g.inflight, int64(g.cfg.MaxInFlight), "requests"
		var wait time.Duration
		switch {
		case gr.watch:
			sem, limit, what = &g.watches, int64(g.cfg.MaxWatches), "watches"
		case reserve > 0:
			if d := identityFrom(r).Device(); d != nil && g.cfg.Priority(r, d) {
				wait = g.cfg.AdmitWait
			} else {
				limit -= reserve
			}
		}
		if !acquire(r.Context(), sem, limit, wait) {
			g.metrics.overloaded.Inc()
			refuse(w, r, gr.rule, &status.Error{Code: http.StatusServiceUnavailable, Message: "gateway is at its limit of concurrent " + what, RetryAfter: spreadRetryAfter()})
			return
		}
		defer sem.Add(-1)
		if gr.watch {
			g.metrics.watchesOpen.Inc()
			defer g.metrics.watchesOpen.Dec()
		}
		next.ServeHTTP(w, r)
	})
}

// acquire takes one of limit slots counted by sem, waiting up to wait for one to free up (checked every
// 5ms: a wait is short and rare, and the count stays one atomic add on the common path).
func acquire(ctx context.Context, sem *atomic.Int64, limit int64, wait time.Duration) bool {
	if sem.Add(1) <= limit {
		return true
	}
	sem.Add(-1)
	if wait <= 0 {
		return false
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return false
		case <-tick.C:
			if sem.Add(1) <= limit {
				return true
			}
			sem.Add(-1)
		}
	}
}

// spreadRetryAfter is 3 to 7 whole seconds, at random.
func spreadRetryAfter() time.Duration { return 3*time.Second + time.Duration(rand.IntN(5))*time.Second }

// deviceWatches keeps each device's set of open watches: at most MaxDeviceWatches at once (429 with
// Retry-After beyond: a device that needs more has leaked some), and each one ended when the device's
// credential changes (DeviceChanged), so a revoked device keeps no stream open.
func (g *Gateway) deviceWatches(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := identityFrom(r)
		if !grantFrom(r).watch || id.kind != deviceIdentity {
			next.ServeHTTP(w, r)
			return
		}
		st := id.state
		if n := st.openWatches.Add(1); n > int64(g.cfg.MaxDeviceWatches) {
			st.openWatches.Add(-1)
			refuse(w, r, grantFrom(r).rule, &status.Error{Code: http.StatusTooManyRequests,
				Message: "node " + id.device.Name + " has " + strconv.Itoa(g.cfg.MaxDeviceWatches) + " watches open, the most a device may: end one first", RetryAfter: retryAfterUnavailable})
			return
		}
		defer st.openWatches.Add(-1)
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		h := &watchHandle{cancel: cancel}
		st.watches.Store(h, struct{}{})
		defer st.watches.Delete(h)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// deadline bounds how long the request may take from here: a forwarded request UpstreamTimeout, a
// local endpoint LocalTimeout, a watch MaxWatchTimeout (which rewrite also sends the API server as
// timeoutSeconds) plus UpstreamTimeout for the API server to end it. A watch also ends when the gateway
// shuts down. It comes after the body, which has its own deadline.
func (g *Gateway) deadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, watch := g.cfg.UpstreamTimeout, false
		switch {
		case routeFrom(r).local != nil:
			d = g.cfg.LocalTimeout
		case grantFrom(r).watch:
			d, watch = g.cfg.MaxWatchTimeout+g.cfg.UpstreamTimeout, true
		}
		ctx, cancel := context.WithDeadline(r.Context(), time.Now().Add(d))
		defer cancel()
		if watch {
			defer context.AfterFunc(g.watchCtx, cancel)()
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}
