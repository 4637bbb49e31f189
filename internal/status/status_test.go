package status

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"
)

func TestWriteRetry(t *testing.T) {
	tests := []struct {
		name       string
		code       int
		retry      time.Duration
		wantReason Reason
		wantRetry  string
	}{
		{"unauthorized", 401, 0, Unauthorized, ""},
		{"forbidden", 403, 0, Forbidden, ""},
		{"rate limited rounds up", 429, 1500 * time.Millisecond, TooManyRequests, "2"},
		{"tiny retry is one second", 503, time.Millisecond, ServiceUnavailable, "1"},
		{"too large", 413, 0, RequestEntityTooLarge, ""},
		{"teapot is a bad request", 418, 0, BadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteRetry(rec, tt.code, "because", tt.retry)
			if rec.Code != tt.code {
				t.Fatalf("code: got %d, want %d", rec.Code, tt.code)
			}
			if got := rec.Header().Get("Retry-After"); got != tt.wantRetry {
				t.Errorf("Retry-After: got %q, want %q", got, tt.wantRetry)
			}
			if got := rec.Header().Get("Content-Length"); got == "" {
				t.Errorf("Content-Length: got none, want the body length")
			}
			var s Status
			if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if s.Kind != "Status" || s.Code != tt.code || s.Reason != tt.wantReason || s.Message != "because" || s.Status != "Failure" {
				t.Errorf("got %+v, want a Failure Status %d %s", s, tt.code, tt.wantReason)
			}
		})
	}
}

func TestWriteError(t *testing.T) {
	tests := []struct {
		name       string
		err        Error
		wantReason Reason
		wantRetry  string
	}{
		{"reason from the code", Error{Code: 503, Message: "busy", RetryAfter: 5 * time.Second}, ServiceUnavailable, "5"},
		{"reason given", Error{Code: 403, Reason: "NodeNameMismatch", Message: "not yours"}, "NodeNameMismatch", ""},
		{"retry rounds up", Error{Code: 429, Message: "slow down", RetryAfter: 200 * time.Millisecond}, TooManyRequests, "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteError(rec, &tt.err)
			if rec.Code != tt.err.Code {
				t.Fatalf("code: got %d, want %d", rec.Code, tt.err.Code)
			}
			if got := rec.Header().Get("Retry-After"); got != tt.wantRetry {
				t.Errorf("Retry-After: got %q, want %q", got, tt.wantRetry)
			}
			if got := rec.Header().Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control: got %q, want no-store", got)
			}
			var s Status
			if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if s.Code != tt.err.Code || s.Reason != tt.wantReason || s.Message != tt.err.Message {
				t.Errorf("got %+v, want code %d reason %s message %q", s, tt.err.Code, tt.wantReason, tt.err.Message)
			}
			if tt.err.Error() != tt.err.Message {
				t.Errorf("Error(): got %q, want the message", tt.err.Error())
			}
		})
	}
}
