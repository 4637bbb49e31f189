// Package status writes the Kubernetes-style JSON Status bodies picogate answers with when it refuses or
// cannot complete a request itself. Devices and kubectl already know how to read them, and they are short:
// the reference firmware prints only the first 200 bytes of an error body. A refusal is an Error (code,
// reason, message, when to retry), written by WriteError.
package status

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// Reason is a Kubernetes StatusReason (metav1.StatusReason), spelled out so devices can match it.
type Reason string

// The reasons picogate itself answers with; the API server's own reasons pass through untouched.
const (
	Unauthorized          Reason = "Unauthorized"
	Forbidden             Reason = "Forbidden"
	BadRequest            Reason = "BadRequest"
	NotFound              Reason = "NotFound"
	MethodNotAllowed      Reason = "MethodNotAllowed"
	TooManyRequests       Reason = "TooManyRequests"
	ServiceUnavailable    Reason = "ServiceUnavailable"
	RequestEntityTooLarge Reason = "RequestEntityTooLarge"
	Timeout               Reason = "Timeout"
	InternalError         Reason = "InternalError"
	Gone                  Reason = "Gone"
	Conflict              Reason = "Conflict"
)

// ReasonFor maps an HTTP status code to the Kubernetes reason the API server would use for it.
func ReasonFor(code int) Reason {
	switch code {
	case http.StatusUnauthorized:
		return Unauthorized
	case http.StatusForbidden:
		return Forbidden
	case http.StatusNotFound:
		return NotFound
	case http.StatusMethodNotAllowed:
		return MethodNotAllowed
	case http.StatusConflict:
		return Conflict
	case http.StatusGone:
		return Gone
	case http.StatusRequestEntityTooLarge:
		return RequestEntityTooLarge
	case http.StatusTooManyRequests:
		return TooManyRequests
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return ServiceUnavailable
	case http.StatusGatewayTimeout:
		return Timeout
	case http.StatusInternalServerError:
		return InternalError
	default:
		return BadRequest
	}
}

// Status is the wire shape of a Kubernetes v1 Status, limited to the fields picogate sets.
type Status struct {
	Kind       string   `json:"kind"`
	APIVersion string   `json:"apiVersion"`
	Metadata   struct{} `json:"metadata"`
	Status     string   `json:"status"`
	Message    string   `json:"message"`
	Reason     Reason   `json:"reason"`
	Code       int      `json:"code"`
}

// Error is a refusal: the answer picogate gives instead of doing what a request asks. It is a value, so
// a step that refuses returns or passes one, and one writer turns it into the response.
type Error struct {
	// Code is the HTTP status code.
	Code int
	// Reason is the Kubernetes reason; empty means ReasonFor(Code).
	Reason Reason
	// Message says why, for the device's author: never a credential.
	Message string
	// RetryAfter, when positive, is sent as Retry-After (whole seconds, rounded up, at least 1).
	RetryAfter time.Duration
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// Body returns the JSON encoding of a failure Status with the given code and message.
func Body(code int, msg string) []byte {
	return body(code, ReasonFor(code), msg)
}

func body(code int, reason Reason, msg string) []byte {
	b, err := json.Marshal(Status{Kind: "Status", APIVersion: "v1", Status: "Failure", Message: msg, Reason: reason, Code: code})
	if err != nil { // a struct of strings and an int always encodes
		panic(err)
	}
	return b
}

// WriteError answers with e as a failure Status. It always sends a Content-Length (devices cannot read
// chunked bodies) and never lets the answer be cached. Whether the connection stays open is the
// caller's business: the gateway closes it when the request's body was not read (see gateway.Refuse).
func WriteError(w http.ResponseWriter, e *Error) {
	reason := e.Reason
	if reason == "" {
		reason = ReasonFor(e.Code)
	}
	b := body(e.Code, reason, e.Message)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	if e.RetryAfter > 0 {
		secs := int((e.RetryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
	w.WriteHeader(e.Code)
	_, _ = w.Write(b)
}

// Write is WriteError without Retry-After.
func Write(w http.ResponseWriter, code int, msg string) {
	WriteError(w, &Error{Code: code, Message: msg})
}

// WriteRetry is WriteError of a code and message, with Retry-After when retryAfter > 0.
func WriteRetry(w http.ResponseWriter, code int, msg string, retryAfter time.Duration) {
	WriteError(w, &Error{Code: code, Message: msg, RetryAfter: retryAfter})
}
