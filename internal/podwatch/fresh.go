package podwatch

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"time"
)

// The API server's current revision, asked for with the gateway's own credential and shared by every
// watch that needs it. A device watches from the resourceVersion of the list it just made, which is
// usually newer than anything the shared watch has seen when no pod changed for a while (its bookmarks
// come once a minute). Such a watch can be served from that resourceVersion on — every later event of
// its node is still to come through the shared watch — as long as the API server did issue it, which a
// list made after the watch arrived tells. One such list serves every watch waiting at the time, and
// they come at most every roundGap: a fleet that boots at once costs a few of them a second, not one
// per board.

// roundGap is the least time between two revision rounds.
const roundGap = 100 * time.Millisecond

// round is one revision list, and the watches waiting for it.
type round struct {
	done chan struct{}
	rv   uint64
	err  error
}

// rounds runs the revision lists one after another while watches wait for them.
type rounds struct {
	mu      sync.Mutex
	next    *round // the round the next waiter joins; it starts after they all arrived
	running bool
}

// currentRevision returns a revision the API server issued after the call began, and records it as known.
func (h *Hub) currentRevision(ctx context.Context) (uint64, error) {
	h.rounds.mu.Lock()
	r := h.rounds.next
	if r == nil {
		r = &round{done: make(chan struct{})}
		h.rounds.next = r
	}
	if !h.rounds.running {
		h.rounds.running = true
		go h.runRounds()
	}
	h.rounds.mu.Unlock()
	select {
	case <-r.done:
		return r.rv, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (h *Hub) runRounds() {
	for {
		h.rounds.mu.Lock()
		r := h.rounds.next
		h.rounds.next = nil
		if r == nil {
			h.rounds.running = false
			h.rounds.mu.Unlock()
			return
		}
		h.rounds.mu.Unlock()
		start := time.Now()
		r.rv, r.err = h.revision()
		if r.err == nil {
			h.learn(r.rv)
		}
		close(r.done)
		time.Sleep(roundGap - time.Since(start))
	}
}

// revision lists one scheduled pod with the gateway's credential, for the list's resourceVersion: the
// API server's current revision (a list without resourceVersion is a consistent read).
func (h *Hub) revision() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.probes.WithLabelValues("revision").Inc()
	body, err := h.cfg.Source(ctx, url.Values{"fieldSelector": {"spec.nodeName!="}, "limit": {"1"}})
	if err != nil {
		return 0, fmt.Errorf("listing a pod for the API server's revision: %w", err)
	}
	defer body.Close()
	var l struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if err := json.NewDecoder(body).Decode(&l); err != nil {
		return 0, fmt.Errorf("decoding the revision list: %w", err)
	}
	return parseRV(l.Metadata.ResourceVersion)
}

// learn records that the API server has issued rv.
func (h *Hub) learn(rv uint64) {
	for k := h.known.Load(); k < rv && !h.known.CompareAndSwap(k, rv); k = h.known.Load() {
	}
}
