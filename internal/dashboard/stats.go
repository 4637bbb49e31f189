package dashboard

import (
	"hash/maphash"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// methods are stored as an index; anything else is "OTHER".
var methods = [...]string{"OTHER", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}

func methodIndex(m string) uint8 {
	for i := 1; i < len(methods); i++ {
		if methods[i] == m {
			return uint8(i)
		}
	}
	return 0
}

// tokenPrefix starts every picogate device token. A device could put its own token in a path or its
// user agent; the dashboard shows "pgt_…" instead, so no token reaches the page.
const tokenPrefix = "pgt_"

// redact cuts what follows each token prefix in s. It allocates only when s holds one.
func redact(s string) string {
	if !strings.Contains(s, tokenPrefix) {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, tokenPrefix)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+len(tokenPrefix)])
		b.WriteString("…")
		s = s[i+len(tokenPrefix):]
		j := 0
		for j < len(s) && (s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9' || s[j] == '_' || s[j] == '-') {
			j++
		}
		s = s[j:]
	}
}

// entry is one request in a device's ring: fixed size, no pointers to request memory.
type entry struct {
	at     int64 // unix nanoseconds
	dur    time.Duration
	rule   string // a policy rule or a gateway check: from a fixed set, never built per request
	status int16
	class  Class
	method uint8
	watch  bool
	path   string // interned (texts): shared by every entry with the same path
}

// refusalEntry is one refused request, with why.
type refusalEntry struct {
	entry
	reason string // interned
}

// rateSlots × rateSlotSeconds is the window of a device's request rate.
const (
	rateSlots       = 6
	rateSlotSeconds = 10
)

// deviceStats is what the dashboard keeps of one device. Each device has its own lock, so devices never
// contend with each other; the rings are allocated once, at their fixed size.
type deviceStats struct {
	mu      sync.Mutex
	version uint64 // bumped on every change

	requests []entry
	reqNext  int
	refusals []refusalEntry // allocated on the first refusal: most devices never have one
	refNext  int
	refRing  int // the refusals ring's length

	total       uint64
	byClass     [numClasses]uint64
	rateLimited uint64
	lastSeen    int64 // unix nanoseconds
	lastClient  netip.Addr
	lastAuth    string
	ua          string // interned

	rate      [rateSlots]uint32
	rateEpoch [rateSlots]int64

	// texts are the strings of the last row built, rebuilt only when version moved past textsAt, so
	// a snapshot of a quiet fleet allocates no strings.
	texts   rowTexts
	textsAt uint64
}

type rowTexts struct{ client, ua, lastRefusal, lastRule string }

func newDeviceStats(requests, refusals int) *deviceStats {
	return &deviceStats{requests: make([]entry, 0, requests), refRing: refusals}
}

// deviceBytes is the memory of one device's state with the given ring sizes: its requests ring,
// allocated on its first request, and its refusals ring, allocated on its first refusal. Neither grows.
// The texts they point to are shared (texts) and not counted.
func deviceBytes(requests, refusals int) (always, refused int) {
	always = int(unsafe.Sizeof(deviceStats{})) + requests*int(unsafe.Sizeof(entry{}))
	return always, refusals * int(unsafe.Sizeof(refusalEntry{}))
}

func (s *deviceStats) record(ev *Event, class Class, tx *dashTexts) {
	at := ev.Start.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version++
	// The entry is written in place: the ring's memory is the only memory a request touches.
	var e *entry
	if len(s.requests) < cap(s.requests) {
		s.requests = s.requests[:len(s.requests)+1]
		e = &s.requests[len(s.requests)-1]
	} else if cap(s.requests) > 0 {
		e = &s.requests[s.reqNext]
		s.reqNext = (s.reqNext + 1) % cap(s.requests)
	}
	if e != nil {
		e.fill(ev, at, class, tx)
	}
	if class.Refused() {
		if s.refusals == nil && s.refRing > 0 {
			s.refusals = make([]refusalEntry, 0, s.refRing)
		}
		var r *refusalEntry
		if len(s.refusals) < cap(s.refusals) {
			s.refusals = s.refusals[:len(s.refusals)+1]
			r = &s.refusals[len(s.refusals)-1]
		} else if cap(s.refusals) > 0 {
			r = &s.refusals[s.refNext]
			s.refNext = (s.refNext + 1) % cap(s.refusals)
		}
		if r != nil {
			r.fill(ev, at, class, tx)
			r.reason = tx.reasons.get(ev.Reason)
		}
	}
	s.total++
	s.byClass[class]++
	if class == ClassRateLimit {
		s.rateLimited++
	}
	if at > s.lastSeen {
		s.lastSeen = at
	}
	s.lastClient = ev.Client
	s.lastAuth = authName(ev.Auth)
	if ev.UserAgent != s.ua {
		s.ua = tx.agents.get(ev.UserAgent)
	}
	sec := at / int64(time.Second)
	epoch := sec / rateSlotSeconds
	slot := int(epoch % rateSlots)
	if s.rateEpoch[slot] != epoch {
		s.rateEpoch[slot], s.rate[slot] = epoch, 0
	}
	s.rate[slot]++
}

func (e *entry) fill(ev *Event, at int64, class Class, tx *dashTexts) {
	e.at, e.dur, e.rule, e.status, e.class = at, ev.Duration, ev.Rule, int16(min(ev.Status, 999)), class
	e.method, e.watch = methodIndex(ev.Method), ev.Watch
	if e.path != ev.Path {
		e.path = tx.paths.get(ev.Path)
	}
}

// authName maps the gateway's auth modes onto constants, so a device's state never retains a string
// built for one request.
func authName(a string) string {
	for _, k := range [...]string{"token", "ip", "hmac", "shared"} {
		if a == k {
			return k
		}
	}
	return ""
}

// perMinute is the number of requests in the current 10-second slot and the five before it: the last
// minute, to within 10 seconds.
func (s *deviceStats) perMinute(now time.Time) uint32 {
	cur := now.Unix() / rateSlotSeconds
	var n uint32
	for i := range rateSlots {
		if e := s.rateEpoch[i]; e <= cur && e > cur-rateSlots {
			n += s.rate[i]
		}
	}
	return n
}

// statsMap is the devices' states, sharded so concurrent requests of different devices rarely share a
// lock; lookups by string allocate nothing.
type statsMap struct {
	seed   maphash.Seed
	shards [64]struct {
		mu sync.RWMutex
		m  map[string]*deviceStats
		_  [40]byte // keep shards on separate cache lines
	}
}

func newStatsMap() *statsMap {
	sm := &statsMap{seed: maphash.MakeSeed()}
	for i := range sm.shards {
		sm.shards[i].m = map[string]*deviceStats{}
	}
	return sm
}

func (sm *statsMap) shard(name string) int {
	return int(maphash.String(sm.seed, name) % uint64(len(sm.shards)))
}

func (sm *statsMap) get(name string) *deviceStats {
	sh := &sm.shards[sm.shard(name)]
	sh.mu.RLock()
	s := sh.m[name]
	sh.mu.RUnlock()
	return s
}

// getOrCreate returns name's state, creating it with the given ring sizes.
func (sm *statsMap) getOrCreate(name string, requests, refusals int) *deviceStats {
	if s := sm.get(name); s != nil {
		return s
	}
	sh := &sm.shards[sm.shard(name)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s := sh.m[name]; s != nil {
		return s
	}
	s := newDeviceStats(requests, refusals)
	sh.m[name] = s
	return s
}

// retain drops every state whose name keep rejects (devices removed from the registry).
func (sm *statsMap) retain(keep func(string) bool) {
	for i := range sm.shards {
		sh := &sm.shards[i]
		sh.mu.Lock()
		for name := range sh.m {
			if !keep(name) {
				delete(sh.m, name)
			}
		}
		sh.mu.Unlock()
	}
}

func (sm *statsMap) len() int {
	n := 0
	for i := range sm.shards {
		sh := &sm.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}
