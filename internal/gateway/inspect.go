package gateway

import (
	"net/http"

	"github.com/picogate/picogate/internal/policy"
	"github.com/picogate/picogate/internal/status"
)

// Inspection is what a Check sees of a request: everything the steps before it decided, and the body.
type Inspection struct {
	Method string
	Path   string // as sent (escaped), accepted by the policy's path check; a local endpoint's path
	Query  policy.Query
	// Rule is the policy rule that allowed the request, or the local endpoint's name.
	Rule string
	// Local reports whether the gateway serves the request itself (a LocalRoute).
	Local bool
	// Identity is who the request is forwarded as; a signed request's signature is verified by now.
	Identity Identity
	// Body is the whole request body: valid during the check only, never to be kept or changed.
	Body []byte
}

// Check inspects a request's content once it has passed every limit, its body is read and its
// signature verified: what a rule of the policy cannot see (e.g. the name of the Node a POST creates).
// It returns nil to let the request through, or the refusal.
type Check func(in *Inspection) *status.Error

// inspect runs the configured checks (Config.Checks) in order; the first refusal answers the request,
// which is then never forwarded.
func (g *Gateway) inspect(next http.Handler) http.Handler {
	if len(g.cfg.Checks) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gr := grantFrom(r)
		in := &Inspection{Method: r.Method, Path: r.URL.EscapedPath(), Query: gr.query, Rule: gr.rule, Local: routeFrom(r).local != nil,
			Identity: identityFrom(r), Body: bodyFrom(r).Bytes()}
		for _, check := range g.cfg.Checks {
			if e := check(in); e != nil {
				refuse(w, r, gr.rule, e)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
