package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"golang.org/x/time/rate"

	"github.com/picogate/picogate/internal/policy"
	"github.com/picogate/picogate/internal/status"
)

// Each step of the request path hands what it learned to the steps after it as an immutable value in
// the request's context, the way kube-rbac-proxy hands on the authenticated user. A step reads the
// values of the steps before it with must: the order of the line is fixed in New, so a missing value is
// a bug a test catches (must panics), never a condition to handle. The one mutable per-request value is
// observe's access-log record.
type ctxKey uint8

const (
	recordKey   ctxKey = iota // *record, observe
	clientKey                 // netip.Addr, sourceCheck
	routeKey                  // route, route
	identityKey               // Identity, authenticate, then verify
	grantKey                  // grant, authorize
	chargeKey                 // charge, deviceRate (a signed request not yet verified only)
	bodyKey                   // Body, readBody
)

func with(r *http.Request, k ctxKey, v any) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), k, v))
}

func must[T any](r *http.Request, k ctxKey) T {
	v, ok := r.Context().Value(k).(T)
	if !ok {
		panic(fmt.Sprintf("gateway: no %T in the request's context: a step runs before the step that sets it", v))
	}
	return v
}

// clientFrom is the client's address, set by sourceCheck.
func clientFrom(r *http.Request) netip.Addr { return must[netip.Addr](r, clientKey) }

// route is what route decided: served by the gateway itself (local is the endpoint) or forwarded (nil).
type route struct{ local *LocalRoute }

func routeFrom(r *http.Request) route { return must[route](r, routeKey) }

// grant is what authorize allowed: the policy rule (or local endpoint) that let the request through,
// its parsed query, and whether it is a watch. For a signed request whose signature is not yet checked
// it may instead carry the refusal authorize decided (deferred): verify gives it only once the signature
// holds, so a sender who cannot sign for the device it names learns nothing but 401.
type grant struct {
	rule     string
	query    policy.Query
	watch    bool
	deferred *status.Error
}

func grantFrom(r *http.Request) grant { return must[grant](r, grantKey) }

// charge is the device-rate token deviceRate took for a signed request whose signature is not yet
// checked. verify gives it back when the request turns out to be forged, so a stranger who knows a
// device's name never spends that device's budget. Only such requests carry one.
type charge struct {
	res *rate.Reservation
	at  time.Time
}

func chargeFrom(r *http.Request) charge { return must[charge](r, chargeKey) }

// refund gives the token back.
func (c charge) refund() {
	if c.res != nil {
		c.res.CancelAt(c.at)
	}
}
