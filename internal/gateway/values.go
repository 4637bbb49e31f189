package gateway

import (
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"golang.org/x/time/rate"

	"github.com/picogate/picogate/internal/policy"
	"github.com/picogate/picogate/internal/status"
)

// Each step of the request path hands what it learned to the steps after it as an immutable value, the
// way kube-rbac-proxy hands on the authenticated user. The values travel in one exchange per request,
// which observe puts in the request's context once: a context value and a copy of the *http.Request per
// step cost every request 13 allocations and 3 KB for nothing the line needs. What keeps the values as
// honest as context values are:
//
//   - each slot of the exchange is written once, by the one step that decides it (with panics on a
//     second write), and a step that refines an earlier decision has a slot of its own: verify's
//     identity beside authenticate's claim, inspect's body beside readBody's;
//   - each value in a slot is immutable (a struct copied out, or pointers to things no step changes);
//   - a step reads the values of the steps before it with their getters (clientFrom, identityFrom, …),
//     which panic when the step that decides the value has not run: the order of the line is fixed in
//     New, so a missing value is a bug a test catches, never a condition to handle.
//
// The exchange belongs to the request's goroutine, like the *http.Request it rides on. The one mutable
// per-request value is observe's access-log record, written through its note methods.
type ctxKey uint8

const (
	exchangeKey ctxKey = iota // *exchange, observe

	clientKey    // netip.Addr, sourceCheck
	routeKey     // route, route
	identityKey  // Identity, authenticate (a signed request's claim)
	verifiedKey  // Identity, verify (a signed request's device, once its signature holds)
	grantKey     // grant, authorize
	chargeKey    // charge, deviceRate (a signed request not yet verified only)
	bodyKey      // Body, readBody
	inspectedKey // Body, inspect (a body a check replaced)
)

// exchange is one request's slots, in its context (see ctxKey), and the record and response writer
// observe keeps for it, allocated with them.
type exchange struct {
	rec record
	rw  recordingWriter

	client    slot[netip.Addr]
	route     slot[route]
	identity  slot[Identity]
	verified  slot[Identity]
	grant     slot[grant]
	charge    slot[charge]
	body      slot[Body]
	inspected slot[Body]
}

// slot is a value one step decides, once.
type slot[T any] struct {
	v   T
	set bool
}

func (s *slot[T]) hand(v T) {
	if s.set {
		panic(fmt.Sprintf("gateway: a %T handed on twice: a step runs twice, or two steps decide the same thing", v))
	}
	s.v, s.set = v, true
}

func (s *slot[T]) get() T {
	if !s.set {
		panic(fmt.Sprintf("gateway: no %T handed on: a step runs before the step that decides it", s.v))
	}
	return s.v
}

// exchangeOf is r's exchange; a request that has not passed observe has none, a bug (it panics).
func exchangeOf(r *http.Request) *exchange {
	x, ok := r.Context().Value(exchangeKey).(*exchange)
	if !ok {
		panic("gateway: a request without its exchange: a step runs before observe")
	}
	return x
}

// with hands v on as the value of k, which the calling step decides, and returns r for the next step:
// the value is written into r's exchange (once), r itself is not copied. v must be of k's type.
func with(r *http.Request, k ctxKey, v any) *http.Request {
	x := exchangeOf(r)
	switch k {
	case clientKey:
		x.client.hand(v.(netip.Addr))
	case routeKey:
		x.route.hand(v.(route))
	case identityKey:
		x.identity.hand(v.(Identity))
	case verifiedKey:
		x.verified.hand(v.(Identity))
	case grantKey:
		x.grant.hand(v.(grant))
	case chargeKey:
		x.charge.hand(v.(charge))
	case bodyKey:
		x.body.hand(v.(Body))
	case inspectedKey:
		x.inspected.hand(v.(Body))
	default:
		panic(fmt.Sprintf("gateway: no slot %d", k))
	}
	return r
}

// clientFrom is the client's address, set by sourceCheck.
func clientFrom(r *http.Request) netip.Addr { return exchangeOf(r).client.get() }

// route is what route decided: served by the gateway itself (local is the endpoint) or forwarded (nil).
type route struct{ local *LocalRoute }

func routeFrom(r *http.Request) route { return exchangeOf(r).route.get() }

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

func grantFrom(r *http.Request) grant { return exchangeOf(r).grant.get() }

// charge is the device-rate token deviceRate took for a signed request whose signature is not yet
// checked. verify gives it back when the request turns out to be forged, so a stranger who knows a
// device's name never spends that device's budget. Only such requests carry one.
type charge struct {
	res *rate.Reservation
	at  time.Time
}

func chargeFrom(r *http.Request) charge { return exchangeOf(r).charge.get() }

// refund gives the token back.
func (c charge) refund() {
	if c.res != nil {
		c.res.CancelAt(c.at)
	}
}
