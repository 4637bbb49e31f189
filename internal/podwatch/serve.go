package podwatch

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/picogate/picogate/internal/asdevice"
	"github.com/picogate/picogate/internal/registry"
)

// podsPath is the one path served: the cluster-wide pod collection, which a node may list and watch
// only with its own node's field selector.
const podsPath = "/api/v1/pods"

// watcher is one served watch, as the hub's node knows it: a channel that wakes its handler.
type watcher struct{ ch chan struct{} }

func (w *watcher) wake() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// ServeWatch serves a device's watch of its own pods from the shared watch, and reports whether it did;
// when it did not, nothing was written and the gateway relays the watch to the API server. It is a
// gateway watch answer: it runs after every check of the request, flushes each event, and ends when the
// request's context ends (the device's credential changed, the gateway shuts down) or its timeout
// passes.
func (h *Hub) ServeWatch(w http.ResponseWriter, r *http.Request, d *registry.Device, _ []byte) bool {
	if d == nil || r.Method != http.MethodGet || r.URL.Path != podsPath {
		return false
	}
	q, ok := parseWatch(r.URL.RawQuery, d.Name)
	if !ok || !acceptsJSON(r.Header.Get("Accept")) {
		h.requests.WithLabelValues("relayed-query").Inc()
		return false
	}
	if !h.Ready() {
		h.requests.WithLabelValues("relayed-not-ready").Inc()
		return false
	}
	ctx := r.Context()
	if !h.allowed(d.Name) && !h.authorize(ctx, d) {
		h.requests.WithLabelValues("relayed-unauthorized").Inc()
		return false // the API server decides, and the device gets its answer
	}
	var latest uint64 // a revision the API server issued after the watch arrived, when it was needed
	if q.rv == "" || q.from > h.known.Load() {
		rv, err := h.currentRevision(ctx)
		if err != nil {
			h.log.Debug("no current revision for a pod watch; relaying it", "device", d.Name, "err", err)
			h.requests.WithLabelValues("relayed-no-revision").Inc()
			return false
		}
		latest = rv
	}
	if q.from > h.known.Load() {
		// Newer than any revision the API server has issued: it answers such a watch itself.
		h.requests.WithLabelValues("relayed-too-new").Inc()
		return false
	}
	wt := &watcher{ch: make(chan struct{}, 1)}
	h.mu.Lock()
	if !h.synced || (q.rv == "" && h.rv < latest) {
		// "Most recent" needs the shared watch to have seen the API server's current revision.
		h.mu.Unlock()
		h.requests.WithLabelValues("relayed-not-fresh").Inc()
		return false
	}
	n := h.nodes[d.Name]
	if n == nil {
		n = &node{}
		h.nodes[d.Name] = n
	}
	var initial [][]byte
	cursor := q.from
	if q.rv == "" || q.rv == "0" {
		initial = n.snapshot()
		cursor = h.rv
	} else if floor := max(h.base, n.floor); q.from < floor {
		h.mu.Unlock()
		h.requests.WithLabelValues("gone").Inc()
		writeHead(w)
		writeGone(w, q.from, floor)
		return true
	}
	n.watchers = append(n.watchers, wt)
	reset := h.reset
	h.mu.Unlock()
	h.requests.WithLabelValues("served").Inc()
	h.served.Add(1)
	defer func() {
		h.served.Add(-1)
		h.mu.Lock()
		if i := slices.Index(n.watchers, wt); i >= 0 {
			last := len(n.watchers) - 1
			n.watchers[i], n.watchers[last] = n.watchers[last], nil
			n.watchers = n.watchers[:last]
		}
		h.mu.Unlock()
	}()
	h.stream(ctx, w, q, n, wt, reset, cursor, initial)
	return true
}

// stream writes the watch until it ends.
func (h *Hub) stream(ctx context.Context, w http.ResponseWriter, q watchQuery, n *node, wt *watcher, reset *ending, cursor uint64, initial [][]byte) {
	writeHead(w)
	for _, raw := range initial {
		if writeEvent(w, "ADDED", raw) != nil {
			return
		}
	}
	flush(w)
	start := h.cfg.Now()
	timeout := h.cfg.MaxTimeout
	if q.timeout > 0 && time.Duration(q.timeout)*time.Second < timeout {
		timeout = time.Duration(q.timeout) * time.Second
	}
	deadline := start.Add(timeout)
	nextMark := h.nextBookmark(start, deadline, q.bookmarks)
	timer := time.NewTimer(h.until(nextMark, deadline))
	defer timer.Stop()
	var batch []pending
	for {
		var ok bool
		batch, cursor, ok = h.collect(n, cursor, batch[:0])
		if !ok {
			return // the node's history moved past this watch (it fell behind): it watches again
		}
		for _, p := range batch {
			if writeEvent(w, p.typ, p.raw) != nil {
				return
			}
		}
		if len(batch) > 0 {
			flush(w)
			full := len(batch) == maxBatch
			batch = nil // a watch that waits holds no batch
			if full {
				continue // there may be more
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-reset.done:
			if reset.broken {
				_ = writeRaw(w, brokenEvent)
				flush(w)
			}
			return
		case <-wt.ch:
		case <-timer.C:
			now := h.cfg.Now()
			if !now.Before(deadline) {
				return
			}
			if q.bookmarks && !now.Before(nextMark) {
				// Events first, so the bookmark never claims a revision before one not yet sent.
				batch, cursor, ok = h.collect(n, cursor, batch[:0])
				if !ok {
					return
				}
				for _, p := range batch {
					if writeEvent(w, p.typ, p.raw) != nil {
						return
					}
				}
				batch = nil
				h.mu.Lock()
				cursor = max(cursor, h.rv)
				h.mu.Unlock()
				if writeBookmark(w, cursor) != nil {
					return
				}
				flush(w)
				nextMark = h.nextBookmark(now, deadline, true)
			}
			timer.Reset(h.until(nextMark, deadline))
		}
	}
}

// pending is an event on its way to one watcher: pointers into the shared history, never a copy.
type pending struct {
	typ string
	raw []byte
}

// maxBatch is how many events a watcher takes from the history at once.
const maxBatch = 32

// collect appends the node's events after cursor to batch, up to maxBatch in all. It reports false when
// the node's history no longer holds every event after cursor.
func (h *Hub) collect(n *node, cursor uint64, batch []pending) ([]pending, uint64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n.floor > cursor {
		return batch, cursor, false
	}
	for ev := n.first; ev != nil && len(batch) < maxBatch; ev = ev.next {
		if ev.rv > cursor {
			batch = append(batch, pending{typ: ev.typ, raw: ev.raw})
			cursor = ev.rv
		}
	}
	return batch, cursor, true
}

// snapshot is the node's current pods, in the API server's order (namespace, then name).
func (n *node) snapshot() [][]byte {
	keys := make([]string, 0, len(n.pods))
	for k := range n.pods {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = n.pods[k]
	}
	return out
}

// nextBookmark is when a watch that began or last had a bookmark at from gets the next one: every
// BookmarkEvery, and 2 seconds before its deadline, as the API server's watch cache sends them.
func (h *Hub) nextBookmark(from, deadline time.Time, bookmarks bool) time.Time {
	if !bookmarks {
		return deadline
	}
	next := from.Add(h.cfg.BookmarkEvery)
	if last := deadline.Add(-2 * time.Second); last.After(from) && last.Before(next) {
		next = last
	}
	return next
}

func (h *Hub) until(mark, deadline time.Time) time.Duration {
	if deadline.Before(mark) {
		mark = deadline
	}
	return max(mark.Sub(h.cfg.Now()), time.Millisecond)
}

// allowed reports whether the API server allowed the device to list its pods within AuthzWindow.
func (h *Hub) allowed(name string) bool {
	v, ok := h.grants.Load(name)
	if !ok {
		return false
	}
	at := v.(*atomic.Int64).Load()
	return at != 0 && h.cfg.Now().Sub(time.Unix(0, at)) <= h.cfg.AuthzWindow
}

func (h *Hub) grant(name string) {
	now := h.cfg.Now().UnixNano()
	if v, ok := h.grants.Load(name); ok {
		v.(*atomic.Int64).Store(now)
		return
	}
	a := &atomic.Int64{}
	a.Store(now)
	if v, loaded := h.grants.LoadOrStore(name, a); loaded {
		v.(*atomic.Int64).Store(now)
	}
}

// Observe is the gateway's Config.Forwarded: for a device's own list or watch of its pods, forwarded to
// the API server, it returns what to do with the answer — a 200 grants the window, a refusal withdraws
// it at once; for anything else, nil.
func (h *Hub) Observe(r *http.Request, d *registry.Device) func(code int) {
	if d == nil || r.Method != http.MethodGet || r.URL.Path != podsPath {
		return nil
	}
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil || len(vals["fieldSelector"]) != 1 || vals.Get("fieldSelector") != "spec.nodeName="+d.Name {
		return nil
	}
	name := d.Name
	return func(code int) {
		switch code {
		case http.StatusOK:
			h.grant(name)
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
			h.grants.Delete(name)
		}
	}
}

// Forget withdraws a device's window (it was rotated, revoked or removed). The gateway ends its open
// watches itself.
func (h *Hub) Forget(name string, _ bool) { h.grants.Delete(name) }

// sweep drops the windows that have passed, so memory follows the devices that watch.
func (h *Hub) sweep() {
	h.grants.Range(func(k, v any) bool {
		at := v.(*atomic.Int64).Load()
		if h.cfg.Now().Sub(time.Unix(0, at)) > h.cfg.AuthzWindow {
			h.grants.CompareAndDelete(k, v)
		}
		return true
	})
}

// authorize asks the API server, as the device, to list the pods of its node (limit=1, from the API
// server's cache: resourceVersion=0): a 200 grants the window. It reports whether it did; any other answer
// leaves the watch for the API server to answer. The request carries the gateway's own User-Agent: the
// audit log shows it made as the device, by the gateway, which the device did not ask for.
func (h *Hub) authorize(ctx context.Context, d *registry.Device) bool {
	h.probes.WithLabelValues("device").Inc()
	res, err := h.cfg.AsDevice.Do(ctx, asdevice.Identity{User: d.User, Groups: d.Groups}, asdevice.Request{Method: http.MethodGet,
		Path: podsPath + "?fieldSelector=" + url.QueryEscape("spec.nodeName="+d.Name) + "&limit=1&resourceVersion=0"})
	if err != nil {
		h.log.Debug("pod watch authorization probe failed", "device", d.Name, "err", err)
		return false
	}
	switch res.Code {
	case http.StatusOK:
		h.grant(d.Name)
		return true
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		h.grants.Delete(d.Name)
	}
	return false
}

// The wire: a watch is a stream of JSON events, one per line, as the API server frames them.

func writeHead(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
}

var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func writeEvent(w http.ResponseWriter, typ string, raw []byte) error {
	bp := bufs.Get().(*[]byte)
	b := append((*bp)[:0], `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","object":`...)
	b = append(b, raw...)
	b = append(b, "}\n"...)
	err := writeRaw(w, b)
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		bufs.Put(bp)
	}
	return err
}

func writeRaw(w http.ResponseWriter, b []byte) error {
	_, err := w.Write(b)
	return err
}

func writeBookmark(w http.ResponseWriter, rv uint64) error {
	return writeRaw(w, []byte(`{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"`+
		strconv.FormatUint(rv, 10)+`","creationTimestamp":null},"spec":{"containers":null},"status":{}}}`+"\n"))
}

// writeGone is the API server's answer to a watch from before its history: one ERROR event with a 410
// Expired Status, and the end of the stream.
func writeGone(w http.ResponseWriter, from, floor uint64) {
	_ = writeRaw(w, []byte(`{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: `+
		strconv.FormatUint(from, 10)+` (`+strconv.FormatUint(floor, 10)+`)","reason":"Expired","code":410}}`+"\n"))
	flush(w)
}

// brokenEvent ends a served watch whose shared watch broke, as the gateway ends a relayed watch whose
// stream broke off: the device backs off and watches again.
var brokenEvent = []byte(`{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the gateway's shared pod watch broke off; watch again","reason":"ServiceUnavailable","code":503}}` + "\n")

func flush(w http.ResponseWriter) { _ = http.NewResponseController(w).Flush() }
