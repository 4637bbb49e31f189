package gateway

import (
	"context"
	"net/http"
	"net/netip"
	"time"

	"github.com/picogate/picogate/internal/policy"
	"github.com/picogate/picogate/internal/registry"
)

// reqInfo is what the middlewares learn about a request, created once by the outermost one and filled
// in as the request moves inward. One context value per request, not one per middleware.
type reqInfo struct {
	start  time.Time
	client netip.Addr
	query  policy.Query
	watch  bool

	device *registry.Device // nil when forwarded with the shared identity
	state  *deviceState     // per-device limiter and metrics; nil with the shared identity
	route  string           // the policy rule that allowed or refused the request
	reason string           // why picogate refused it, for the access log ("" if it did not)

	auditID string // the API server's Audit-Id, so a log line can be joined with the audit log

	bodyBuffered bool // authentication already read the body (a signed request): limit leaves it
	bodyPending  bool // the request has a body nobody has read: a refusal closes the connection
	local        bool // served by the gateway itself (LocalPrefix), never forwarded
}

type infoKey struct{}

func withInfo(r *http.Request, info *reqInfo) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
}

// infoFrom returns the request's info. Every middleware runs inside accept, which sets it; a handler
// tested alone gets a fresh one so it never has to check for nil.
func infoFrom(r *http.Request) *reqInfo {
	if info, ok := r.Context().Value(infoKey{}).(*reqInfo); ok {
		return info
	}
	return &reqInfo{start: time.Now()}
}

// identity is how the access log names who made the request.
func (i *reqInfo) identity() string {
	switch {
	case i.device != nil:
		return i.device.User[0] // system:node:NAME, built once per device
	case i.local, i.reason != "" && i.route == "":
		return "-"
	default:
		return "shared"
	}
}
