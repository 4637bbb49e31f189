package gateway

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/picogate/picogate/internal/policy"
	"github.com/picogate/picogate/internal/status"
)

// LocalPrefix is where the gateway's own endpoints live on the device port. The API server has no such
// paths, so nothing under it is ever forwarded.
const LocalPrefix = "/picogate/v1/"

// LocalRoute is an endpoint the gateway serves itself under LocalPrefix (enrollment, rotation,
// deregistration). It goes down the same request path as a forwarded request — source check,
// authentication, limits, body, deadline, access log and metrics — and its handler takes the place of
// forwarding. A handler refuses with Refuse.
type LocalRoute struct {
	// Method and Path, e.g. "POST" and "/picogate/v1/rotate".
	Method, Path string
	// Name is the route label of the metrics and the access log.
	Name string
	// Device routes authenticate the device first (token, signature or address, exactly as forwarded
	// requests) and charge its rate limit; the handler gets it with DeviceFrom. Others are anonymous:
	// no credential is looked at, and they are limited per source address.
	Device bool
	// OptionalDevice routes (enrollment) are anonymous unless the request carries an Authorization
	// header: then it is authenticated exactly as on a Device route (a wrong credential is a 401), and
	// the handler gets the device with DeviceFrom. The source address alone never makes it a device's.
	OptionalDevice bool
	// MaxBodyBytes caps the request body (413 beyond). Default: the gateway's MaxBodyBytes.
	MaxBodyBytes int64
	Handler      http.Handler
}

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

// localRoutes indexes the built-in and configured endpoints by "METHOD /path", and lists them for the
// 404 of an unknown one.
type localRoutes struct {
	byKey  map[string]*LocalRoute
	served string
	hint   string
}

func newLocalRoutes(builtin LocalRoute, extra []LocalRoute) localRoutes {
	lr := localRoutes{byKey: make(map[string]*LocalRoute)}
	var served []string
	for _, rt := range append([]LocalRoute{builtin}, extra...) {
		lr.byKey[rt.Method+" "+rt.Path] = &rt
		served = append(served, rt.Method+" "+rt.Path)
	}
	lr.served = strings.Join(served, ", ")
	if len(extra) == 0 {
		lr.hint = " (enrollment, rotation and deregistration need picogate serve --enrollment)"
	}
	return lr
}

// route decides whether the gateway serves a request itself — a path under LocalPrefix: one of its
// endpoints, else 404 naming those it has — or forwards it. A local path gets the policy's shape check
// first, so no "..", "//" or percent-encoding can make it name another endpoint.
func (g *Gateway) route(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, LocalPrefix) {
			next.ServeHTTP(w, with(r, routeKey, route{}))
			return
		}
		if err := policy.CheckPath(r.URL.EscapedPath()); err != nil {
			refuse(w, r, "local", &status.Error{Code: http.StatusBadRequest, Message: err.Error()})
			return
		}
		rt, ok := g.locals.byKey[r.Method+" "+r.URL.Path]
		if !ok {
			refuse(w, r, "local", &status.Error{Code: http.StatusNotFound,
				Message: "no picogate endpoint " + r.Method + " " + r.URL.Path + " on this gateway; it serves " + g.locals.served + g.locals.hint})
			return
		}
		recordFrom(r).noteRule(rt.Name, false)
		next.ServeHTTP(w, with(r, routeKey, route{local: rt}))
	})
}

// dispatch is the last step: a local endpoint's handler, or next (compaction, then the proxy).
func (g *Gateway) dispatch(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt := routeFrom(r); rt.local != nil {
			rt.local.Handler.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}
