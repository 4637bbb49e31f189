package heartbeat

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/picogate/picogate/internal/asdevice"
	"github.com/picogate/picogate/internal/compact"
	"github.com/picogate/picogate/internal/status"
)

// RetryAfter is how long a device is asked to wait after a 503: 3 to 7 whole seconds, at random, so a
// fleet refused at one moment (an API server outage) does not come back at one moment.
func RetryAfter() time.Duration { return 3*time.Second + time.Duration(rand.IntN(5))*time.Second }

// writeNode answers a translated heartbeat: 200 with a small Node — name, uid, resourceVersion and
// the conditions' type and status as last known upstream — never the whole Node, which after an outage
// (the controller's messages and taints) overflows the reference firmware's 2,047-byte receive ring.
func writeNode(w http.ResponseWriter, name string, st *devState, outcome string) {
	b := make([]byte, 0, 384)
	b = append(b, `{"kind":"Node","apiVersion":"v1","metadata":{"name":`...)
	b = appendString(b, name)
	if st.uid != "" {
		b = append(b, `,"uid":`...)
		b = appendString(b, st.uid)
	}
	if st.rv != "" {
		b = append(b, `,"resourceVersion":`...)
		b = appendString(b, st.rv)
	}
	b = append(b, `},"status":{"conditions":[`...)
	for i, c := range st.conds {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"type":`...)
		b = appendString(b, c.typ)
		b = append(b, `,"status":`...)
		b = appendString(b, c.status)
		b = append(b, '}')
	}
	writeOK(w, append(b, "]}}"...), outcome)
}

// writeOK answers 200 with the object the gateway built, naming what it did in HeaderOutcome.
func writeOK(w http.ResponseWriter, b []byte, outcome string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set(HeaderOutcome, outcome)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always encodes
	return append(b, q...)
}

// relay answers with the API server's refusal, compacted, with a Content-Length.
func relay(w http.ResponseWriter, res asdevice.Response) {
	body := res.Body
	if c, err := compact.Append(nil, body); err == nil {
		body = c
	}
	h := w.Header()
	if json.Valid(body) && bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")) {
		h.Set("Content-Type", "application/json")
	}
	if res.RetryAfter != "" {
		h.Set("Retry-After", res.RetryAfter)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(res.Code)
	_, _ = w.Write(body)
}

func writeUnavailable(w http.ResponseWriter, msg string) {
	status.WriteRetry(w, http.StatusServiceUnavailable, msg, RetryAfter())
}
