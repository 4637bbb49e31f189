package gateway

import (
	"net/http"
	"time"

	"github.com/picogate/picogate/internal/status"
)

// retryAfterUnavailable is the Retry-After of every concurrency cap, the gateway's own (503) or the
// client's (429). A rate limit's Retry-After is when its limiter next has a token, at least 1s.
const retryAfterUnavailable = 5 * time.Second

// Refuse answers r with e: the one way the gateway and its local endpoints refuse a request. It writes
// e as a Kubernetes Status (with Retry-After when e has one), records e's message in the access log as
// the reason, and closes the connection when the request's body has not been read.
func Refuse(w http.ResponseWriter, r *http.Request, e *status.Error) {
	refuseAs(w, r, "", e.Message, e)
}

// refuse is Refuse naming the rule that refused, unless a step before has named one.
func refuse(w http.ResponseWriter, r *http.Request, rule string, e *status.Error) {
	refuseAs(w, r, rule, e.Message, e)
}

// refuseAs is refuse with a reason for the log that differs from what the client is told (an
// authentication failure's cause, an upstream failure's kind).
func refuseAs(w http.ResponseWriter, r *http.Request, rule, reason string, e *status.Error) {
	recordFrom(r).noteRefusal(rule, reason)
	if bodyUnread(r) {
		// After a handler returns, net/http reads up to 256 KiB of an unread body, with no deadline, to
		// keep the connection: a body trickled at 1 byte/s would hold the connection for days, and
		// before the answer is flushed. The refusal closes the connection instead, at once.
		w.Header().Set("Connection", "close")
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
	status.WriteError(w, e)
}

// bodyUnread reports whether r has a body that readBody has not read (r is refused before that step,
// or by it).
func bodyUnread(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody {
		return false
	}
	return !exchangeOf(r).body.set
}
