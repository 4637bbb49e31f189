package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/picogate/picogate/internal/compact"
	"github.com/picogate/picogate/internal/status"
)

// The receive ring. The reference firmware's TCP layer keeps a 2,048-byte ring per exchange (2,047
// bytes usable) and drops what does not fit; only then is the answer copied into its larger buffer. So
// an answer it can read, status line and headers included, is at most 2,047 bytes. The gateway fits
// the answers of the clients Config.RingUserAgents names into Config.RingBytes (fitRing), and counts
// every device answer over RingBytes (picogate_responses_over_ring_total).

// DefaultRingBytes is the reference firmware's receive limit, headers included.
const DefaultRingBytes = 2047

// DefaultRingUserAgent is the reference firmware's User-Agent (k3s-pico-node/1.0), as a prefix.
const DefaultRingUserAgent = "k3s-pico-node/"

// HeaderFit names what the gateway did to make an answer fit a ring-limited client: "summary" when a
// write's answer is a summary of the object written (compact.AppendSummary) instead of all of it.
const HeaderFit = "Picogate-Fit"

// ringClient reports whether r comes from a client that keeps at most RingBytes of an answer.
func (g *Gateway) ringClient(r *http.Request) bool {
	ua := r.Header.Get("User-Agent")
	for _, p := range g.cfg.RingUserAgents {
		if strings.HasPrefix(ua, p) {
			return true
		}
	}
	return false
}

// wireHeadBytes is the size of what net/http writes before the body of the HTTP/1.1 answer to r with
// this code and header, once the header holds Content-Length (or Transfer-Encoding): the status line,
// every header line, the Date and the Connection: close it adds when they are missing, and the blank
// line. TestWireHeadBytes holds it to what a real net/http server writes.
func wireHeadBytes(r *http.Request, code int, h http.Header) int {
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	n := len("HTTP/1.1 000 ") + len(text) + len("\r\n")
	for k, vs := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		for _, v := range vs {
			n += len(k) + len(": ") + len(strings.TrimSpace(v)) + len("\r\n")
		}
	}
	if _, ok := h["Date"]; !ok {
		n += len("Date: Mon, 02 Jan 2006 15:04:05 GMT\r\n")
	}
	if r.Close && !hasCloseToken(h.Get("Connection")) {
		n += len("Connection: close\r\n")
		if h.Get("Connection") != "" {
			n -= len("Connection: \r\n") + len(h.Get("Connection")) // replaced, not added
		}
	}
	return n + len("\r\n")
}

func hasCloseToken(v string) bool {
	for _, t := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(t), "close") {
			return true
		}
	}
	return false
}

// fitRing makes a buffered answer to a ring-limited client fit RingBytes with its headers, once
// compaction has dropped what no device uses. What the device asked for is never cut:
//
//   - a successful write (POST, PUT, PATCH) is answered with a summary of the object written — name,
//     uid, resourceVersion and the conditions' type and status — marked Picogate-Fit: summary: the
//     write happened, and the reference firmware reads no more than the status line of such an answer;
//   - a read whose object is too big is answered 406 Not Acceptable, a Status saying how big it is:
//     the device must see that it did not get the object, not half of it;
//   - an error whose Status is too big keeps its code and reason, its message shortened.
//
// It returns the body to send; c.code and c.Header() are changed to match. scratch is a buffer the
// summary may be built in.
func (c *compactWriter) fitRing(body []byte, scratch *[]byte) []byte {
	limit := c.g.cfg.RingBytes
	h := c.Header()
	fits := func(b []byte) bool {
		h.Set("Content-Length", strconv.Itoa(len(b)))
		return wireHeadBytes(c.req, c.code, h)+len(b) <= limit
	}
	if fits(body) {
		return body
	}
	total := wireHeadBytes(c.req, c.code, h) + len(body)
	switch m := c.req.Method; {
	case c.code >= 200 && c.code < 300 && (m == http.MethodPost || m == http.MethodPut || m == http.MethodPatch):
		if sum, err := compact.AppendSummary((*scratch)[:0], body); err == nil {
			*scratch = sum
			h.Set(HeaderFit, "summary")
			c.g.metrics.ringFit.WithLabelValues("summarized").Inc()
			if fits(sum) {
				return sum
			}
			h.Del(HeaderFit)
		}
	case c.code >= 400:
		var st status.Status
		if json.Unmarshal(body, &st) == nil && st.Kind == "Status" {
			c.g.metrics.ringFit.WithLabelValues("shortened").Inc()
			return c.ringRefusal(c.code, st.Reason, shorten(st.Message, 300))
		}
	}
	c.g.metrics.ringFit.WithLabelValues("refused").Inc()
	c.rec.noteRefusal("", "answer over the receive ring")
	return c.ringRefusal(http.StatusNotAcceptable, "NotAcceptable", fmt.Sprintf(
		"the answer is %d bytes with headers, over this device's %d-byte receive limit; the object must be smaller", total, limit))
}

// ringRefusal replaces the answer's status and header with a failure Status.
func (c *compactWriter) ringRefusal(code int, reason status.Reason, msg string) []byte {
	if reason == "" {
		reason = status.ReasonFor(code)
	}
	b, _ := json.Marshal(status.Status{Kind: "Status", APIVersion: "v1", Status: "Failure", Message: msg, Reason: reason, Code: code})
	h := c.Header()
	for k := range h {
		if k != "Date" {
			delete(h, k)
		}
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	c.code = code
	return b
}

// shorten cuts s to at most n bytes on a character boundary, marking the cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
