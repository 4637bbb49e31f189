package gateway

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/picogate/picogate/internal/policy"
	"github.com/picogate/picogate/internal/registry"
)

// LocalPrefix is where the gateway's own endpoints live on the device port. The API server has no such
// paths, so nothing under it is ever forwarded.
const LocalPrefix = "/picogate/v1/"

// LocalRoute is an endpoint the gateway serves itself under LocalPrefix (enrollment, rotation,
// deregistration), after the source check and with the same access log and metrics as forwarded
// requests.
type LocalRoute struct {
	// Method and Path, e.g. "POST" and "/picogate/v1/rotate".
	Method, Path string
	// Name is the route label of the metrics and the access log.
	Name string
	// Device routes authenticate the device first (token, signature or address, exactly as forwarded
	// requests) and charge its rate limit; the handler gets it with DeviceFrom. Others are anonymous.
	Device  bool
	Handler http.Handler
}

// DeviceFrom returns the device a request was authenticated as, or nil.
func DeviceFrom(r *http.Request) *registry.Device { return infoFrom(r).device }

// NoteReason records why a local handler refused a request, for the access log line.
func NoteReason(r *http.Request, reason string) { infoFrom(r).reason = reason }

// timeRoute is built in: a device without a clock (a Pico has no RTC) gets the gateway's time, which
// signed requests must be within HMACWindow of.
func (g *Gateway) timeRoute() LocalRoute {
	return LocalRoute{Method: http.MethodGet, Path: LocalPrefix + "time", Name: "time", Handler: http.HandlerFunc(g.serveTime)}
}

func (g *Gateway) serveTime(w http.ResponseWriter, _ *http.Request) {
	now := g.cfg.Now()
	b := []byte(`{"unix":` + strconv.FormatInt(now.Unix(), 10) + `,"rfc3339":"` + now.UTC().Format(time.RFC3339) + `","window":` + strconv.Itoa(int(g.cfg.HMACWindow/time.Second)) + `}`)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// localMux builds the handler of LocalPrefix: each route wrapped for its kind, and a 404 naming what
// this gateway serves for anything else.
func (g *Gateway) localMux(routes []LocalRoute) http.Handler {
	mux := http.NewServeMux()
	var served []string
	for _, rt := range append([]LocalRoute{g.timeRoute()}, routes...) {
		h := rt.Handler
		if rt.Device {
			h = chain(h, g.authenticate, g.chargeDevice)
		}
		name := rt.Name
		mux.Handle(rt.Method+" "+rt.Path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := infoFrom(r)
			info.route, info.local = name, true
			h.ServeHTTP(w, r)
		}))
		served = append(served, rt.Method+" "+rt.Path)
	}
	list := strings.Join(served, ", ")
	mux.HandleFunc(LocalPrefix, func(w http.ResponseWriter, r *http.Request) {
		msg := "no picogate endpoint " + r.Method + " " + r.URL.Path + " on this gateway; it serves " + list
		if !g.hasEnrollment(routes) {
			msg += " (enrollment, rotation and deregistration need picogate serve --enrollment)"
		}
		g.refuse(w, infoFrom(r), http.StatusNotFound, "local", msg)
	})
	return mux
}

func (g *Gateway) hasEnrollment(routes []LocalRoute) bool { return len(routes) > 0 }

// local sends requests under LocalPrefix to the gateway's own endpoints instead of the chain. Their
// paths get the policy's shape check first, so no "..", "//" or percent-encoding reaches the mux (which
// would clean such a path into a redirect elsewhere).
func (g *Gateway) local(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, LocalPrefix) {
			next.ServeHTTP(w, r)
			return
		}
		if err := policy.CheckPath(r.URL.EscapedPath()); err != nil {
			info := infoFrom(r)
			info.local = true
			g.refuse(w, info, http.StatusBadRequest, "local", err.Error())
			return
		}
		g.localHandler.ServeHTTP(w, r)
	})
}

// chargeDevice spends one request of an authenticated device's rate limit on a local endpoint, and
// records when it was last seen, as limit does for forwarded requests.
func (g *Gateway) chargeDevice(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := infoFrom(r)
		if info.device == nil || info.state == nil {
			g.metrics.authFailures.WithLabelValues(authMissing).Inc()
			g.refuse(w, info, http.StatusUnauthorized, info.route, "this endpoint needs the device's own credential")
			return
		}
		st := info.state
		st.lastSeen.Store(info.start.Unix())
		if !st.limiter.AllowN(info.start, 1) {
			st.rateLimited.Inc()
			g.refuseRetry(w, info, http.StatusTooManyRequests, info.route, "rate limit exceeded for node "+info.device.Name, time.Second)
			return
		}
		next.ServeHTTP(w, r)
	})
}
