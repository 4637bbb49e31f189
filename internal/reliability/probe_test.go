package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Outcome kinds of one request, as a strict device sees it. Only "truncated" and "corrupt" are what the
// issue calls lost or corrupted; the others are failures the device can recognise and retry.
const (
	kindOK         = "ok"         // a complete 2xx response
	kindHTTP       = "http"       // a complete error response (code recorded)
	kindRefused    = "refused"    // the connection was refused: nothing was sent
	kindUnanswered = "unanswered" // the connection closed or reset before any byte of a response
	kindTruncated  = "truncated"  // a response began and did not complete (short body, cut chunking, cut headers)
	kindCorrupt    = "corrupt"    // a complete response whose JSON body does not parse
	kindTimeout    = "timeout"    // not a byte of a response within the client's deadline
)

// request is one request a device makes.
type request struct {
	op     string // a short name for reports
	method string
	path   string
	auth   string // bearer token; "" for none
	ctype  string
	body   []byte
}

// result is what became of one request.
type result struct {
	op         string
	at         time.Time
	dur        time.Duration
	kind       string
	code       int
	retryAfter string
	ctype      string
	body       []byte
	err        error
}

func (r result) String() string {
	s := fmt.Sprintf("%s %s", r.op, r.kind)
	if r.code != 0 {
		s += " " + strconv.Itoa(r.code)
	}
	if r.err != nil {
		s += ": " + r.err.Error()
	}
	return s
}

// jsonOK reports whether a JSON body is valid (non-JSON bodies pass).
func (r result) jsonOK() bool {
	return !strings.HasPrefix(r.ctype, "application/json") || len(r.body) == 0 || json.Valid(r.body)
}

// countingReader counts the bytes read, so a cut can be told apart from no answer at all.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// strictDo sends req on a new connection the way the reference firmware does (HTTP/1.1, Connection:
// close) and checks the answer strictly: framing complete (Content-Length honoured, chunking
// terminated), within timeout.
func strictDo(addr string, req request, timeout time.Duration) result {
	start := time.Now()
	r := result{op: req.op, at: start}
	defer func() { r.dur = time.Since(start) }()
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		r.kind, r.err = kindRefused, err
		if !errors.Is(err, syscall.ECONNREFUSED) {
			r.kind = kindTimeout
		}
		r.dur = time.Since(start)
		return r
	}
	defer conn.Close()
	_ = conn.SetDeadline(start.Add(timeout))
	if _, err := conn.Write(appendRequest(nil, addr, req)); err != nil {
		r.kind, r.err = kindUnanswered, err
		r.dur = time.Since(start)
		return r
	}
	cr := &countingReader{r: conn}
	resp, err := http.ReadResponse(bufio.NewReader(cr), nil)
	switch {
	case err != nil && cr.n == 0 && isTimeout(err):
		r.kind, r.err = kindTimeout, err
	case err != nil && cr.n == 0:
		r.kind, r.err = kindUnanswered, err
	case err != nil:
		r.kind, r.err = kindTruncated, fmt.Errorf("headers: %w", err)
	}
	if err != nil {
		r.dur = time.Since(start)
		return r
	}
	r.code, r.ctype, r.retryAfter = resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Retry-After")
	r.body, err = io.ReadAll(resp.Body)
	r.dur = time.Since(start)
	if err != nil {
		r.kind, r.err = kindTruncated, fmt.Errorf("body after %d bytes: %w", len(r.body), err)
		return r
	}
	r.kind = kindOK
	if r.code >= 300 {
		r.kind = kindHTTP
	}
	return r
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

func appendRequest(b []byte, addr string, req request) []byte {
	b = fmt.Appendf(b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: picogate-reliability\r\nAccept: application/json\r\nConnection: close\r\n", req.method, req.path, addr)
	if req.auth != "" {
		b = append(b, "Authorization: Bearer "+req.auth+"\r\n"...)
	}
	if req.body != nil {
		b = fmt.Appendf(b, "Content-Type: %s\r\nContent-Length: %d\r\n", req.ctype, len(req.body))
	}
	b = append(b, "\r\n"...)
	return append(b, req.body...)
}

// recorder collects results from many probes.
type recorder struct {
	mu      sync.Mutex
	results []result
}

func (rc *recorder) add(r result) {
	if r.kind == kindOK || r.kind == kindHTTP {
		if !r.jsonOK() {
			r.kind = kindCorrupt
		}
	}
	r.body = nil
	rc.mu.Lock()
	rc.results = append(rc.results, r)
	rc.mu.Unlock()
}

// snapshot returns the results so far.
func (rc *recorder) snapshot() []result {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.results)
}

// tally counts results by kind (and by code for HTTP errors, as "http-503").
func tally(rs []result) map[string]int {
	out := map[string]int{}
	for _, r := range rs {
		k := r.kind
		if k == kindHTTP {
			k = "http-" + strconv.Itoa(r.code)
		}
		out[k]++
	}
	return out
}

func formatTally(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func between(rs []result, from, to time.Time) []result {
	var out []result
	for _, r := range rs {
		if !r.at.Before(from) && r.at.Before(to) {
			out = append(out, r)
		}
	}
	return out
}

func maxDur(rs []result) time.Duration {
	var m time.Duration
	for _, r := range rs {
		m = max(m, r.dur)
	}
	return m
}

func percentile(rs []result, p float64) time.Duration {
	if len(rs) == 0 {
		return 0
	}
	d := make([]time.Duration, len(rs))
	for i, r := range rs {
		d[i] = r.dur
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[min(len(d)-1, int(p*float64(len(d))))]
}

// nodeBody is a small Node a probe device registers itself with.
func nodeBody(name string) []byte {
	return fmt.Appendf(nil, `{"apiVersion":"v1","kind":"Node","metadata":{"name":%q,"labels":{"picogate.io/board":"probe"}}}`, name)
}

func heartbeatBody() []byte {
	now := time.Now().UTC().Format(time.RFC3339)
	return fmt.Appendf(nil, `{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","lastHeartbeatTime":%q,"lastTransitionTime":%q}]}}`, now, now)
}

// probe is a device that registers its node, then cycles through a status PATCH, a GET of its node and
// a GET of the fleet ConfigMap, every interval, recording every result strictly.
type probe struct {
	addr     func() string // the gateway to use now
	name     string
	token    string
	interval time.Duration
	timeout  time.Duration
	rec      *recorder
}

func (p probe) requests() []request {
	return []request{
		{op: "patch-status", method: "PATCH", path: "/api/v1/nodes/" + p.name + "/status", auth: p.token, ctype: "application/strategic-merge-patch+json"},
		{op: "get-node", method: "GET", path: "/api/v1/nodes/" + p.name, auth: p.token},
		{op: "get-config", method: "GET", path: "/api/v1/namespaces/default/configmaps/pico-config", auth: p.token},
	}
}

// run probes until ctx ends. The registration POST is recorded too.
func (p probe) run(ctx context.Context) {
	timeout := p.timeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	for ctx.Err() == nil {
		r := strictDo(p.addr(), request{op: "post-node", method: "POST", path: "/api/v1/nodes", auth: p.token, ctype: "application/json", body: nodeBody(p.name)}, timeout)
		p.rec.add(r)
		if r.code == http.StatusCreated || r.code == http.StatusConflict {
			break
		}
		if !sleepCtx(ctx, p.interval) {
			return
		}
	}
	reqs := p.requests()
	for i := 0; ctx.Err() == nil; i++ {
		req := reqs[i%len(reqs)]
		if req.op == "patch-status" {
			req.body = heartbeatBody()
		}
		p.rec.add(strictDo(p.addr(), req, timeout))
		if !sleepCtx(ctx, p.interval) {
			return
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// watchStream is a device's pod watch through the gateway, read until it ends.
type watchStream struct {
	code   int
	events chan string
	done   chan struct{}
	ended  time.Time
	err    error // nil: the stream ended cleanly (terminating chunk); else how it broke
}

// openWatch starts a pod watch for node as the device with token and reads it in the background. It
// returns once the answer's header has come: the API server sends it when the watch is registered, so a
// 200 means the watch is established upstream.
func openWatch(addr, token, node string) (*watchStream, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	req := request{method: "GET", path: "/api/v1/pods?fieldSelector=spec.nodeName%3D" + node + "&watch=1", auth: token}
	if _, err := conn.Write(appendRequest(nil, addr, req)); err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	w := &watchStream{code: resp.StatusCode, events: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		defer conn.Close()
		defer close(w.done)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case w.events <- sc.Text():
			default:
			}
		}
		w.ended, w.err = time.Now(), sc.Err()
	}()
	return w, nil
}

// waitEnd waits up to d for the watch to end and reports whether it did.
func (w *watchStream) waitEnd(d time.Duration) bool {
	select {
	case <-w.done:
		return true
	case <-time.After(d):
		return false
	}
}

// lastEvent returns the type of the last event received, "" if none.
func (w *watchStream) lastEventType() string {
	last := ""
	for {
		select {
		case ev := <-w.events:
			var e struct{ Type string }
			if json.Unmarshal([]byte(ev), &e) == nil {
				last = e.Type
			}
		default:
			return last
		}
	}
}
