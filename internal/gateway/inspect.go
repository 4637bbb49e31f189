package gateway

import (
	"bytes"
	"context"
	"io"
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
	// ContentType is the request's Content-Type header: how to read Body.
	ContentType string
	// Context is the request's, for a check that must ask the API server.
	Context context.Context
	// Body is the whole request body: valid during the check only, never to be kept or changed (see
	// ReplaceBody).
	Body []byte

	replaced bool
}

// ReplaceBody makes the request go on with b as its body, instead of what the client sent: the checks
// after this one, the answer step and the API server see b. A check that must change what is forwarded
// (the device marker on a Node create) does so here, after every check before it has passed.
func (in *Inspection) ReplaceBody(b []byte) { in.Body, in.replaced = b, true }

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
		body := bodyFrom(r)
		in := &Inspection{Method: r.Method, Path: r.URL.EscapedPath(), Query: gr.query, Rule: gr.rule, Local: routeFrom(r).local != nil,
			Identity: identityFrom(r), ContentType: r.Header.Get("Content-Type"), Context: r.Context(), Body: body.Bytes()}
		for _, check := range g.cfg.Checks {
			if e := check(in); e != nil {
				refuse(w, r, gr.rule, e)
				return
			}
		}
		if in.replaced {
			// The pooled body stays open until readBody closes it; the new one is the checks' own.
			b := in.Body
			body.b = b
			r = with(r.WithContext(r.Context()), inspectedKey, body)
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		}
		next.ServeHTTP(w, r)
	})
}
