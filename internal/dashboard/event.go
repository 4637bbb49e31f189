package dashboard

import (
	"net/netip"
	"strings"
	"time"
)

// Event is one finished device request as the gateway saw it. The gateway fills it in its observe step
// and calls Record; nothing in it may be a credential (the gateway never puts the Authorization header
// here).
type Event struct {
	// Start is when the request arrived; Duration how long it took to answer (for a watch: how long it
	// was open).
	Start    time.Time
	Duration time.Duration
	// Device is the device's name, "" when the request had no device identity (the shared identity, or
	// refused before authentication succeeded).
	Device string
	// Auth is how the request was identified: token, ip, hmac, shared, or "" when it was not.
	Auth   string
	Method string
	Path   string // the URL path, without the query
	Status int
	// Rule is the policy rule (or the gateway's own check) that allowed or refused the request.
	Rule string
	// Reason says why picogate refused the request or could not forward it; "" if it was forwarded and
	// answered by the API server.
	Reason      string
	Client      netip.Addr
	UserAgent   string
	RateLimited bool // refused by the device's rate limit (429)
	Watch       bool
	// UpstreamError is set when the API server could not be reached or did not answer in time.
	UpstreamError bool
}

// Class is what kind of error or refusal a request met, a bounded set so per-device counters are a
// fixed array.
type Class uint8

// The classes, in the order the page shows them.
const (
	ClassOK        Class = iota // answered below 400
	ClassAuth                   // 401: missing, unknown, revoked credential, bad signature…
	ClassPolicy                 // refused by the device policy or the gateway's request checks
	ClassSource                 // the client's address is not allowed
	ClassRateLimit              // 429: the device's rate limit
	ClassOverload               // 503: the gateway's concurrency limits
	ClassUpstream               // the API server was unreachable or too slow
	ClassAPI4xx                 // forwarded; the API server answered 4xx
	ClassAPI5xx                 // forwarded; the API server answered 5xx
	numClasses
)

var classNames = [numClasses]string{"ok", "auth", "policy", "source", "rate-limit", "overload", "upstream", "api-4xx", "api-5xx"}

// String is the class's name as the page and the JSON show it.
func (c Class) String() string {
	if c < numClasses {
		return classNames[c]
	}
	return "unknown"
}

// Refused reports whether picogate itself refused the request (as opposed to the API server answering
// with an error, or success).
func (c Class) Refused() bool { return c >= ClassAuth && c <= ClassUpstream }

// Classify sorts a finished request into its class.
func Classify(ev *Event) Class {
	switch {
	case ev.UpstreamError:
		return ClassUpstream
	case ev.RateLimited || ev.Status == 429 && ev.Reason != "":
		return ClassRateLimit
	case ev.Status < 400:
		return ClassOK
	case ev.Reason == "":
		if ev.Status >= 500 {
			return ClassAPI5xx
		}
		return ClassAPI4xx
	case ev.Status == 401 || ev.Rule == "auth":
		return ClassAuth
	case ev.Rule == "source":
		return ClassSource
	case ev.Status == 503:
		return ClassOverload
	case strings.HasPrefix(ev.Reason, "upstream"):
		return ClassUpstream
	case ev.Status >= 500:
		return ClassUpstream
	default:
		return ClassPolicy
	}
}
