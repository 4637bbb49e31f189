package gateway

import (
	"net/http"

	"github.com/picogate/picogate/internal/registry"
)

// Answer may answer a device's request itself instead of forwarding it — heartbeat translation
// (heartbeat.Translator.ServeStatusPatch), cached reads (readcache.Cache.ServeGet). It reports whether it
// did; when it did not, it has written nothing and the request goes on to the proxy. It runs after every
// check (identity, policy, limits, body, signature, inspection) and within the request's deadline, and
// any request it makes upstream must be made as d. body is the whole request body, valid during the call.
type Answer func(w http.ResponseWriter, r *http.Request, d *registry.Device, body []byte) bool

// answer gives Config.Answers, in order, each non-watch device request that reaches the proxy; the
// first that takes it answers it. The shared identity's requests are always forwarded.
func (g *Gateway) answer(next http.Handler) http.Handler {
	if len(g.cfg.Answers) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := identityFrom(r).Device(); d != nil && !grantFrom(r).watch {
			body := bodyFrom(r).Bytes()
			for _, a := range g.cfg.Answers {
				if a(w, r, d, body) {
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}
