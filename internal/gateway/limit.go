package gateway

import (
	"context"
	"net/http"
	"time"

	"github.com/picogate/picogate/internal/status"
)

// The limits come before the body is read, so a request over any of them costs the gateway no body
// buffer and no body time: per device (rate), then global (in-flight requests or watches). Each is one
// step.

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
// watches (MaxWatches), 503 with Retry-After beyond.
func (g *Gateway) admit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gr := grantFrom(r)
		sem, limit, what := &g.inflight, int64(g.cfg.MaxInFlight), "requests"
		if gr.watch {
			sem, limit, what = &g.watches, int64(g.cfg.MaxWatches), "watches"
		}
		if n := sem.Add(1); n > limit {
			sem.Add(-1)
			g.metrics.overloaded.Inc()
			refuse(w, r, gr.rule, &status.Error{Code: http.StatusServiceUnavailable, Message: "gateway is at its limit of concurrent " + what, RetryAfter: retryAfterUnavailable})
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

// deviceWatches keeps each device's set of open watches, each one ended when the device's credential
// changes (DeviceChanged), so a revoked device keeps no stream open.
func (g *Gateway) deviceWatches(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := identityFrom(r)
		if !grantFrom(r).watch || id.kind != deviceIdentity {
			next.ServeHTTP(w, r)
			return
		}
		st := id.state
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		h := &watchHandle{cancel: cancel}
		st.watches.Store(h, struct{}{})
		defer st.watches.Delete(h)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// deadline bounds how long the request may take from here: a forwarded request UpstreamTimeout; a
// watch ends when the gateway shuts down. It comes after the body, which has its own deadline.
func (g *Gateway) deadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case routeFrom(r).local != nil:
			next.ServeHTTP(w, r)
		case grantFrom(r).watch:
			ctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			defer context.AfterFunc(g.watchCtx, cancel)()
			next.ServeHTTP(w, r.WithContext(ctx))
		default:
			ctx, cancel := context.WithDeadline(r.Context(), time.Now().Add(g.cfg.UpstreamTimeout))
			defer cancel()
			next.ServeHTTP(w, r.WithContext(ctx))
		}
	})
}
