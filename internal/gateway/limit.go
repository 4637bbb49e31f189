package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/picogate/picogate/internal/hmacauth"
)

const retryAfterUnavailable = 5 * time.Second

// deviceState is what the gateway keeps per registered device: its rate limiter and its metric handles,
// resolved once so a request does not look labels up.
type deviceState struct {
	limiter     *rate.Limiter
	lastSeen    atomic.Int64 // unix seconds
	rateLimited prometheus.Counter
	watches     sync.Map // *watchHandle → struct{}: open watches, ended when the device is revoked
	nonces      atomic.Pointer[hmacauth.NonceCache]
	keyed       [2]atomic.Pointer[hmacauth.Keyed] // hmac mode: verifiers of the current and next key
}

// limit enforces, in order: the per-device rate limit (429 with Retry-After; a hammering device only
// ever spends its own budget), the global caps on in-flight requests and open watches (503 with
// Retry-After), and the request body limit (413), reading the body here in full so a slow upload ties up
// the gateway, never the API server. Non-watch requests get the upstream deadline.
func (g *Gateway) limit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := infoFrom(r)
		if st := info.state; st != nil {
			st.lastSeen.Store(info.start.Unix())
			if res := st.limiter.ReserveN(info.start, 1); !res.OK() || res.DelayFrom(info.start) > 0 {
				delay := res.DelayFrom(info.start)
				res.CancelAt(info.start)
				st.rateLimited.Inc()
				g.refuseRetry(w, info, http.StatusTooManyRequests, info.route, "rate limit exceeded for node "+info.device.Name, max(delay, time.Second))
				return
			}
		}
		sem := &g.inflight
		limitN := int64(g.cfg.MaxInFlight)
		if info.watch {
			sem, limitN = &g.watches, int64(g.cfg.MaxWatches)
		}
		if n := sem.Add(1); n > limitN {
			sem.Add(-1)
			g.metrics.overloaded.Inc()
			g.refuseRetry(w, info, http.StatusServiceUnavailable, info.route, "gateway is at its limit of concurrent requests", retryAfterUnavailable)
			return
		}
		defer sem.Add(-1)
		if info.watch {
			// A watch ends when the gateway shuts down or the device's credential changes, not only when
			// the device or the API server closes it.
			ctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			defer context.AfterFunc(g.watchCtx, cancel)()
			if st := info.state; st != nil {
				h := &watchHandle{cancel: cancel}
				st.watches.Store(h, struct{}{})
				defer st.watches.Delete(h)
			}
			g.metrics.watchesOpen.Inc()
			defer g.metrics.watchesOpen.Dec()
			r = r.WithContext(ctx)
		}

		if r.Body != nil && r.Body != http.NoBody && !info.bodyBuffered {
			body, code, err := g.readBody(w, r)
			if err != nil {
				g.refuse(w, info, code, info.route, err.Error())
				return
			}
			defer g.putBody(body)
			r.Body = io.NopCloser(bytes.NewReader(*body))
			r.ContentLength = int64(len(*body))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(*body)), nil }
		}
		if !info.watch && g.cfg.UpstreamTimeout > 0 {
			ctx, cancel := context.WithTimeout(r.Context(), g.cfg.UpstreamTimeout)
			defer cancel()
			r = r.WithContext(ctx)
		}
		next.ServeHTTP(w, r)
	})
}

var errBodyTooLarge = errors.New("request body too large")

// readBody reads the whole request body within the body timeout and size limit, into a pooled buffer.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request) (*[]byte, int, error) {
	max := g.cfg.MaxBodyBytes
	if r.ContentLength > max {
		return nil, http.StatusRequestEntityTooLarge, errors.New("request body of " + strconv.FormatInt(r.ContentLength, 10) + " bytes is over the limit of " + strconv.FormatInt(max, 10))
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(g.cfg.BodyTimeout))
	defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	buf := g.bodies.Get().(*[]byte)
	b := bytes.NewBuffer((*buf)[:0])
	n, err := b.ReadFrom(io.LimitReader(r.Body, max+1))
	*buf = b.Bytes()
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		g.putBody(buf)
		return nil, http.StatusRequestTimeout, errors.New("request body not received within " + g.cfg.BodyTimeout.String())
	case err != nil:
		g.putBody(buf)
		return nil, http.StatusBadRequest, errors.New("reading request body: " + err.Error())
	case n > max:
		g.putBody(buf)
		return nil, http.StatusRequestEntityTooLarge, errBodyTooLarge
	}
	infoFrom(r).bodyPending = false
	return buf, 0, nil
}

func (g *Gateway) putBody(b *[]byte) {
	if cap(*b) <= 64<<10 {
		*b = (*b)[:0]
		g.bodies.Put(b)
	}
}
