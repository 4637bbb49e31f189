package dashboard

import (
	"encoding/json"
	"net/http"
	"slices"
	"time"
)

// Delta is one message of the live fleet stream. The first is the whole page (Full); each later one
// carries only what changed since the one before: the rows of the page that changed, the page's order
// when it changed, and the counts. Nothing is sent while nothing changes.
type Delta struct {
	Now     int64    `json:"now"` // unix milliseconds, so the page computes ages on the server's clock
	Full    bool     `json:"full,omitempty"`
	Matched int      `json:"matched"`
	Summary Summary  `json:"summary"`
	Kube    string   `json:"kube,omitempty"`
	Classes []string `json:"classes,omitempty"` // on the first message
	// Order is the names on the page, in order; sent when it changed.
	Order []string `json:"order,omitempty"`
	Rows  []Row    `json:"rows,omitempty"`
}

// heartbeat keeps proxies from closing an idle stream.
const heartbeat = 15 * time.Second

// streamState is what one stream last sent.
type streamState struct {
	rows    map[string]Row
	order   []string
	matched int
	summary Summary
	kube    string
}

// next computes the delta from the last page sent to p; ok is false when nothing changed.
func (st *streamState) next(p Page) (Delta, bool) {
	dl := Delta{Now: p.Now, Matched: p.Matched, Summary: p.Summary, Kube: p.Kube}
	full := st.rows == nil
	order := make([]string, len(p.Rows))
	for i := range p.Rows {
		order[i] = p.Rows[i].Name
	}
	rows := make(map[string]Row, len(p.Rows))
	for _, r := range p.Rows {
		rows[r.Name] = r
		if old, ok := st.rows[r.Name]; full || !ok || old != r {
			dl.Rows = append(dl.Rows, r)
		}
	}
	if full || !slices.Equal(order, st.order) {
		dl.Order = order
		if dl.Order == nil {
			dl.Order = []string{}
		}
	}
	changed := full || len(dl.Rows) > 0 || dl.Order != nil || p.Matched != st.matched || p.Summary != st.summary || p.Kube != st.kube
	st.rows, st.order, st.matched, st.summary, st.kube = rows, order, p.Matched, p.Summary, p.Kube
	if full {
		dl.Full, dl.Classes = true, p.Classes
	}
	return dl, changed
}

// serveStream is the live fleet table: server-sent events, one Delta per change, checked every Tick.
func (d *Dashboard) serveStream(w http.ResponseWriter, r *http.Request) {
	select {
	case d.streams <- struct{}{}:
		defer func() { <-d.streams }()
	default:
		w.Header().Set("Retry-After", "5")
		http.Error(w, "too many open dashboard streams", http.StatusServiceUnavailable)
		return
	}
	q := ParseQuery(r.URL.Query())
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	var st streamState
	tick := time.NewTicker(d.cfg.Tick)
	defer tick.Stop()
	lastWrite := time.Now()
	for {
		if dl, changed := st.next(d.snapshot().page(q)); changed {
			b, err := json.Marshal(dl)
			if err != nil {
				return
			}
			if _, err := w.Write(append(append([]byte("event: fleet\ndata: "), b...), '\n', '\n')); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
			lastWrite = time.Now()
		} else if time.Since(lastWrite) > heartbeat {
			if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil || rc.Flush() != nil {
				return
			}
			lastWrite = time.Now()
		}
		select {
		case <-r.Context().Done():
			return
		case <-d.done:
			return
		case <-tick.C:
		}
	}
}
