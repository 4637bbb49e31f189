package gateway

import (
	"fmt"
	"net/http"
	"net/netip"
	"time"
)

// prepared returns r carrying what the steps before the one under test would have handed on: always a
// record, plus each value given. A step tested alone gets exactly the values it reads, so a step that
// reads one more fails its test (must panics).
func prepared(r *http.Request, values ...any) *http.Request {
	r = with(r, recordKey, &record{start: time.Now()})
	for _, v := range values {
		switch v := v.(type) {
		case netip.Addr:
			r = with(r, clientKey, v)
		case route:
			r = with(r, routeKey, v)
		case Identity:
			r = with(r, identityKey, v)
		case grant:
			r = with(r, grantKey, v)
		case charge:
			r = with(r, chargeKey, v)
		case Body:
			r = with(r, bodyKey, v)
		default:
			panic(fmt.Sprintf("prepared: no step hands on a %T", v))
		}
	}
	return r
}

// grantAll stands for authorize in tests of the steps around it: every request is allowed (the policy
// has its own tests).
func grantAll(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, with(r, grantKey, grant{rule: "test"}))
	})
}

// signedLine is the part of the request path a signed request's authentication spans: the header in
// authenticate, the rate charge, the body, the signature in verify. Every request is granted.
func signedLine(g *Gateway, next http.Handler) http.Handler {
	return chain(next, g.observe, clientAnywhere, g.route, g.authenticate, grantAll, g.deviceRate, g.readBody, g.verify)
}

// clientAnywhere stands for sourceCheck: the client is whatever RemoteAddr says, allowed.
func clientAnywhere(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, with(r, clientKey, netip.MustParseAddrPort(r.RemoteAddr).Addr().Unmap()))
	})
}
