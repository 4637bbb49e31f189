package podwatch

import (
	"fmt"
	"strconv"
)

// What the shared watch brings in: the reflector's list and events become the nodes' pods and the
// history served watches read.

// store is the hub as the reflector's store: the reflector's goroutine is its only writer.
type store Hub

func (s *store) hub() *Hub { return (*Hub)(s) }

func (s *store) Add(obj any) error    { return s.hub().apply("ADDED", obj) }
func (s *store) Update(obj any) error { return s.hub().apply("MODIFIED", obj) }
func (s *store) Delete(obj any) error { return s.hub().apply("DELETED", obj) }
func (s *store) Resync() error        { return nil }

// Replace takes a full list. The first one syncs the hub; a later one (the shared watch expired and the
// reflector listed again) starts a new history, and every served watch ends cleanly: its device watches
// again from its resourceVersion and gets 410 if that is before the new list, as from the API server.
func (s *store) Replace(items []any, rv string) error {
	h := s.hub()
	v, err := parseRV(rv)
	if err != nil {
		return err
	}
	nodes := map[string]*node{}
	for _, it := range items {
		o, ok := it.(*object)
		if !ok {
			return fmt.Errorf("pod list item of type %T", it)
		}
		n := nodes[o.node]
		if n == nil {
			n = &node{pods: map[string][]byte{}}
			nodes[o.node] = n
		}
		n.pods[o.Namespace+"/"+o.Name] = o.raw
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.synced {
		h.endAllLocked(false)
	}
	h.nodes, h.base, h.synced = nodes, v, true
	clear(h.fifo)
	h.head, h.n, h.bytes = 0, 0, 0
	h.advanceLocked(v)
	h.setUp(true, nil)
	return nil
}

// UpdateResourceVersion takes the shared watch's progress (bookmarks, and after each event).
func (s *store) UpdateResourceVersion(rv string) {
	h := s.hub()
	if v, err := parseRV(rv); err == nil {
		h.mu.Lock()
		h.advanceLocked(v)
		h.mu.Unlock()
	}
}

func (h *Hub) advanceLocked(v uint64) {
	if v <= h.rv {
		return
	}
	h.rv = v
	h.learn(v)
	close(h.fresh)
	h.fresh = make(chan struct{})
}

// apply takes one event of the shared watch: the node's pods change, the event joins the history, and
// the node's watchers are woken.
func (h *Hub) apply(typ string, obj any) error {
	o, ok := obj.(*object)
	if !ok {
		return fmt.Errorf("pod event of type %T", obj)
	}
	v, err := parseRV(o.ResourceVersion)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.nodes[o.node]
	if n == nil {
		n = &node{}
		h.nodes[o.node] = n
	}
	key := o.Namespace + "/" + o.Name
	if typ == "DELETED" {
		delete(n.pods, key)
	} else {
		if n.pods == nil {
			n.pods = map[string][]byte{}
		}
		n.pods[key] = o.raw
	}
	ev := &event{rv: v, typ: typ, raw: o.raw, node: n}
	if n.last != nil {
		n.last.next = ev
	} else {
		n.first = ev
	}
	n.last = ev
	h.pushLocked(ev)
	h.advanceLocked(v)
	for _, w := range n.watchers {
		w.wake()
	}
	return nil
}

// pushLocked adds ev to the history, dropping the oldest events beyond MaxEvents and MaxEventBytes: a
// node whose event is dropped can be resumed only from after it (its floor).
func (h *Hub) pushLocked(ev *event) {
	if h.n == len(h.fifo) && h.n < h.cfg.MaxEvents {
		grown := make([]*event, min(2*len(h.fifo), h.cfg.MaxEvents))
		for i := range h.n {
			grown[i] = h.fifo[(h.head+i)%len(h.fifo)]
		}
		h.fifo, h.head = grown, 0
	}
	for h.n > 0 && (h.n == len(h.fifo) || h.bytes+int64(len(ev.raw)) > h.cfg.MaxEventBytes) {
		old := h.fifo[h.head]
		h.fifo[h.head] = nil
		h.head = (h.head + 1) % len(h.fifo)
		h.n--
		h.bytes -= int64(len(old.raw))
		n := old.node
		n.floor = old.rv
		n.first = old.next
		if n.first == nil {
			n.last = nil
		}
		old.next, old.node = nil, nil
	}
	h.fifo[(h.head+h.n)%len(h.fifo)] = ev
	h.n++
	h.bytes += int64(len(ev.raw))
}

// parseRV reads a resourceVersion: the API server's are decimal etcd revisions.
func parseRV(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("resourceVersion %q is not a revision", s)
	}
	return v, nil
}
