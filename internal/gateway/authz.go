package gateway

import (
	"net/http"
	"strings"

	"github.com/picogate/picogate/internal/policy"
)

// methodOverrideHeaders are honoured by some frameworks to turn a POST into a DELETE. The API server
// ignores them, but a device sending one is either confused or probing, and either way gets a 400.
var methodOverrideHeaders = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// authorize applies the device policy before anything is forwarded: the path must be unambiguous, the
// query unambiguous, no protocol upgrade (exec, attach, port-forward), and a rule must allow the method,
// path, query and watch for this device. Refusals are 403 (400 for malformed requests) naming the rule.
func (g *Gateway) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := infoFrom(r)
		if r.Header.Get("Upgrade") != "" || headerHasToken(r.Header["Connection"], "upgrade") {
			g.refuse(w, info, http.StatusForbidden, "upgrade", "protocol upgrades (exec, attach, port-forward) are not available to devices")
			return
		}
		for _, h := range methodOverrideHeaders {
			if _, ok := r.Header[h]; ok {
				g.refuse(w, info, http.StatusBadRequest, "method-override", h+" is not accepted: send the real method")
				return
			}
		}
		path := r.URL.EscapedPath()
		if err := policy.CheckPath(path); err != nil {
			g.refuse(w, info, http.StatusBadRequest, "path", err.Error())
			return
		}
		if strings.HasPrefix(path, g.registrySecrets) && (len(path) == len(g.registrySecrets) || path[len(g.registrySecrets)] == '/') {
			g.refuse(w, info, http.StatusForbidden, "registry", "device records are not readable through the gateway")
			return
		}
		q, err := policy.ParseQuery(r.URL.RawQuery)
		if err != nil {
			g.refuse(w, info, http.StatusBadRequest, "query", err.Error())
			return
		}
		info.query, info.watch = q, q.Watch()
		self := ""
		if info.device != nil {
			self = info.device.Name
		}
		d := g.policy.Allow(policy.Request{Method: r.Method, Path: path, Query: q, Watch: info.watch, Self: self})
		info.route = d.Rule
		if !d.Allowed() {
			g.refuse(w, info, http.StatusForbidden, d.Rule, d.Reason)
			return
		}
		next.ServeHTTP(w, r)
	})
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
