package reliability

import (
	"testing"
	"time"

	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
)

// auditEvent is the part of a kube-apiserver audit event the tests read.
type auditEvent struct {
	Stage      string    `json:"stage"`
	Verb       string    `json:"verb"`
	RequestURI string    `json:"requestURI"`
	UserAgent  string    `json:"userAgent"`
	Received   time.Time `json:"requestReceivedTimestamp"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ImpersonatedUser *struct {
		Username string `json:"username"`
	} `json:"impersonatedUser"`
	ObjectRef *struct {
		Resource string `json:"resource"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// forwarded reports whether the event is a device request the gateway forwarded (impersonating).
func (e auditEvent) forwarded() bool { return e.ImpersonatedUser != nil }

// selfReview reports whether the event is a SelfSubjectReview: the gateway's own client asking who it is.
func (e auditEvent) selfReview() bool {
	return e.ObjectRef != nil && e.ObjectRef.Resource == "selfsubjectreviews"
}

// readAudit returns every completed request the API server audited (only the gateway identities are).
func readAudit(t testing.TB) []auditEvent {
	t.Helper()
	return controlplanetest.ReadAudit(t, shared.AuditLog(), func(ev *auditEvent) bool { return ev.Stage == "ResponseComplete" })
}
