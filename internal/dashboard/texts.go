package dashboard

import (
	"hash/maphash"
	"strings"
	"sync"
	"unicode/utf8"
)

// Text bounds: a hostile request line or user agent cannot make a ring hold more than these. Longer
// values are cut at a character boundary and shown with "…".
const (
	pathBytes   = 96  // "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/" + a 30-character name fits
	reasonBytes = 120 // the gateway's refusal reasons are one short sentence
	uaBytes     = 120
)

// Interning bounds: a text longer than twice its limit is stored cut but not interned (no board sends
// one), and a table holds at most textShards × textsPerShard texts, about 11 MB of paths at worst (each
// key and text at its bound): room for three paths of each of 10,000 boards. A shard that fills up
// starts again, which costs only new copies of the texts still in use.
const (
	textShards    = 32
	textsPerShard = 1024
)

// texts interns the bounded, redacted strings the rings keep: paths, refusal reasons, user agents. A
// fleet repeats a handful of them per device (its Node, its Lease, the ConfigMap) and one user agent
// for every board, so an entry of a ring is a string header pointing at one shared copy instead of a
// fixed buffer of its own: 56 bytes instead of 136 per request, which is most of a device's state.
//
// A stored text never points into request memory: it is built by bound (redacted, cut, copied). The
// table is bounded: a shard that fills up is emptied and starts again, so random paths from a hostile
// board cost at most the bound in the table, plus the ring entries that still hold them. Lookups by
// string allocate nothing, so Record stays allocation-free for texts it has seen.
type texts struct {
	limit  int // bytes kept of a text
	seed   maphash.Seed
	shards [textShards]struct {
		mu sync.RWMutex
		m  map[string]string // what the request said → what the ring keeps
	}
}

func newTexts(limit int) *texts {
	t := &texts{limit: limit, seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = make(map[string]string)
	}
	return t
}

// dashTexts are the dashboard's three tables, one per kind of text (each with its own bound).
type dashTexts struct{ paths, reasons, agents *texts }

func newDashTexts() *dashTexts {
	return &dashTexts{paths: newTexts(pathBytes), reasons: newTexts(reasonBytes), agents: newTexts(uaBytes)}
}

// get returns s redacted and cut to the table's limit, interned when s is short enough to be a key.
func (t *texts) get(s string) string {
	if len(s) > 2*t.limit {
		return bound(s, t.limit)
	}
	sh := &t.shards[maphash.String(t.seed, s)%textShards]
	sh.mu.RLock()
	v, ok := sh.m[s]
	sh.mu.RUnlock()
	if ok {
		return v
	}
	v = bound(s, t.limit)
	key := v
	if v != s {
		key = strings.Clone(s)
	}
	sh.mu.Lock()
	if len(sh.m) >= textsPerShard {
		clear(sh.m)
	}
	sh.m[key] = v
	sh.mu.Unlock()
	return v
}

// bound is s redacted, cut to at most limit bytes at a UTF-8 boundary (with "…" after a cut), in memory
// of its own. Invalid UTF-8 is kept as bytes; encoding/json replaces it when sent.
func bound(s string, limit int) string {
	s = redact(s)
	if len(s) <= limit {
		return strings.Clone(s)
	}
	n := limit
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…" // a new string: nothing of s is retained
}
