package gateway

import (
	"net/http"
	"strings"

	"github.com/picogate/picogate/internal/policy"
	"github.com/picogate/picogate/internal/status"
)

// methodOverrideHeaders are honoured by some frameworks to turn a POST into a DELETE. The API server
// ignores them, but a device sending one is either confused or probing, and either way gets a 400.
var methodOverrideHeaders = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// authorize applies the device policy before anything is forwarded: the path must be unambiguous, the
// query unambiguous, no protocol upgrade (exec, attach, port-forward), and a rule must allow the method,
// path, query and watch for this device. Refusals are 403 (400 for malformed requests) naming the rule.
// A local endpoint needs no rule, but a device endpoint needs a device (401). It hands on the grant: the
// rule, the parsed query, and whether the request is a watch. A signed request's refusal waits for its
// signature (deny).
func (g *Gateway) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := identityFrom(r)
		if rt := routeFrom(r).local; rt != nil {
			if rt.Device && id.kind != deviceIdentity {
				g.metrics.authFailures.WithLabelValues(authMissing).Inc()
				refuse(w, r, rt.Name, &status.Error{Code: http.StatusUnauthorized, Message: "this endpoint needs the device's own credential"})
				return
			}
			next.ServeHTTP(w, with(r, grantKey, grant{rule: rt.Name}))
			return
		}
		if r.Header.Get("Upgrade") != "" || headerHasToken(r.Header["Connection"], "upgrade") {
			deny(w, r, next, id, "upgrade", &status.Error{Code: http.StatusForbidden, Message: "protocol upgrades (exec, attach, port-forward) are not available to devices"})
			return
		}
		for _, h := range methodOverrideHeaders {
			if _, ok := r.Header[h]; ok {
				deny(w, r, next, id, "method-override", &status.Error{Code: http.StatusBadRequest, Message: h + " is not accepted: send the real method"})
				return
			}
		}
		path := r.URL.EscapedPath()
		if err := policy.CheckPath(path); err != nil {
			deny(w, r, next, id, "path", &status.Error{Code: http.StatusBadRequest, Message: err.Error()})
			return
		}
		if strings.HasPrefix(path, g.registrySecrets) && (len(path) == len(g.registrySecrets) || path[len(g.registrySecrets)] == '/') {
			deny(w, r, next, id, "registry", &status.Error{Code: http.StatusForbidden, Message: "device records are not readable through the gateway"})
			return
		}
		q, err := policy.ParseQuery(r.URL.RawQuery)
		if err != nil {
			deny(w, r, next, id, "query", &status.Error{Code: http.StatusBadRequest, Message: err.Error()})
			return
		}
		gr := grant{query: q, watch: q.Watch()}
		self := ""
		if id.kind == deviceIdentity {
			self = id.device.Name // a signed request's claimed name: verify checks the signature later
		}
		d := g.policy.Allow(policy.Request{Method: r.Method, Path: path, Query: q, Watch: gr.watch, Self: self})
		gr.rule = d.Rule
		recordFrom(r).noteRule(d.Rule, gr.watch)
		if !d.Allowed() {
			deny(w, r, next, id, d.Rule, &status.Error{Code: http.StatusForbidden, Message: d.Reason})
			return
		}
		next.ServeHTTP(w, with(r, grantKey, gr))
	})
}

// deny refuses a request authorize does not allow. A signed request whose signature is not yet checked
// is a claim on the device it names, which anyone on the LAN can make: its refusal goes on in the grant
// for verify to give once the signature holds. A forgery is then answered 401 like every other
// authentication failure, never with what the named device may do, and never logged as that device's
// refusal; the claim goes through the limits and its body is read as an allowed claim's would be.
func deny(w http.ResponseWriter, r *http.Request, next http.Handler, id Identity, rule string, e *status.Error) {
	if id.claim != nil {
		next.ServeHTTP(w, with(r, grantKey, grant{rule: rule, deferred: e}))
		return
	}
	refuse(w, r, rule, e)
}

// headerHasToken reports whether a comma-separated header (like Connection) lists token.
func headerHasToken(values []string, token string) bool {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}
