package dashboard

import (
	"cmp"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/picogate/picogate/internal/registry"
)

// Row is one device in the fleet table. It is comparable, so the live stream can tell which rows changed
// since it last sent them.
type Row struct {
	Name   string `json:"name"`
	Auth   string `json:"auth"`
	Status string `json:"status"` // active, revoked, pending (approval), approved (credential not collected)
	// Ready is the Node's Ready condition: True, False, Unknown, or "" with no Node.
	Ready      string `json:"ready"`
	LeaseRenew int64  `json:"leaseRenew,omitempty"` // unix milliseconds
	LastSeen   int64  `json:"lastSeen,omitempty"`   // unix milliseconds of the last request's start
	Client     string `json:"client,omitempty"`
	UserAgent  string `json:"userAgent,omitempty"`
	PerMinute  uint32 `json:"perMinute"` // requests in the last minute
	Requests   uint64 `json:"requests"`
	// Classes counts requests by class, in the order of the stream's "classes".
	Classes     [numClasses]uint64 `json:"classes"`
	RateLimited uint64             `json:"rateLimited"`
	LastRefusal string             `json:"lastRefusal,omitempty"`
	LastRule    string             `json:"lastRule,omitempty"` // the rule of the last refusal
	// Pods counts the pods bound to the device's Node by phase: Pending, Running, Succeeded, Failed, Unknown.
	Pods     [len(podPhases)]uint16 `json:"pods"`
	Firmware string                 `json:"firmware,omitempty"`
	Board    string                 `json:"board,omitempty"`
}

// deviceStatus is the registry's word on a device.
func deviceStatus(dev *registry.Device) string {
	switch {
	case dev.IsRevoked():
		return "revoked"
	case dev.Enrollment != nil && dev.Enrollment.Approved.IsZero():
		return "pending"
	case dev.Enrollment != nil:
		return "approved"
	}
	return "active"
}

// fill copies a device's gateway-side figures into r.
func (s *deviceStats) fill(r *Row, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.textsAt != s.version || s.version == 0 {
		s.texts = rowTexts{ua: s.ua}
		if s.lastClient.IsValid() {
			s.texts.client = s.lastClient.String()
		}
		if n := len(s.refusals); n > 0 {
			last := &s.refusals[(s.refNext+n-1)%n]
			s.texts.lastRefusal, s.texts.lastRule = last.reason, last.rule
		}
		s.textsAt = s.version
	}
	r.Client, r.UserAgent, r.LastRefusal, r.LastRule = s.texts.client, s.texts.ua, s.texts.lastRefusal, s.texts.lastRule
	if s.lastSeen > 0 {
		r.LastSeen = s.lastSeen / int64(time.Millisecond)
	}
	r.PerMinute = s.perMinute(now)
	r.Requests = s.total
	r.Classes = s.byClass
	r.RateLimited = s.rateLimited
}

// snapshot is every device's row at one moment, shared by the streams of one tick.
type snapshot struct {
	at   time.Time
	rows []Row
	kube string // the Kubernetes view's status, "" when live
	anon uint64 // requests without a device identity
}

type snapshotCache struct {
	mu   sync.Mutex
	last *snapshot
}

// snapshot returns the fleet's rows, built at most once per half tick however many streams ask.
func (d *Dashboard) snapshot() *snapshot {
	d.snap.mu.Lock()
	defer d.snap.mu.Unlock()
	now := d.cfg.Now()
	if s := d.snap.last; s != nil && now.Sub(s.at) < d.cfg.Tick/2 && now.Sub(s.at) >= 0 {
		return s
	}
	names := d.cfg.Registry.Names()
	s := &snapshot{at: now, rows: make([]Row, 0, len(names))}
	d.kube.mu.RLock()
	s.kube = d.kube.status
	for _, name := range names {
		dev, ok := d.cfg.Registry.ByName(name)
		if !ok {
			continue
		}
		r := Row{Name: name, Auth: string(dev.Auth), Status: deviceStatus(dev)}
		kr := d.kube.row(name)
		r.Ready, r.LeaseRenew, r.Pods, r.Firmware, r.Board = kr.ready, kr.leaseRenew, kr.pods, kr.firmware, kr.board
		s.rows = append(s.rows, r)
	}
	d.kube.mu.RUnlock()
	for i := range s.rows {
		if st := d.stats.get(s.rows[i].Name); st != nil {
			st.fill(&s.rows[i], now)
		}
	}
	d.anon.mu.Lock()
	s.anon = d.anon.total
	d.anon.mu.Unlock()
	d.snap.last = s
	return s
}

// Query is the fleet table's view: filter, sort and page. The zero Query is every device by name,
// the first page.
type Query struct {
	Prefix string // name prefix
	// Status is "", active, revoked, pending, approved, ready, notready (Node not Ready or missing),
	// refused (has refusals).
	Status string
	Quiet  time.Duration // only devices with no request for longer than this (0: off)
	// QuietAfter is how long without a request makes a device count as quiet in the summary. Default
	// 30s: three missed Lease renewals of a device renewing every 10s.
	QuietAfter time.Duration
	Sort       string // name, seen, rate, refusals, ready, status, lease
	Desc       bool
	Offset     int
	Limit      int // default 100, at most 500
}

const (
	defaultLimit      = 100
	maxLimit          = 500
	defaultQuietAfter = 30 * time.Second
)

var sorts = map[string]func(a, b *Row) int{
	"name":     func(a, b *Row) int { return 0 },
	"seen":     func(a, b *Row) int { return cmp.Compare(a.LastSeen, b.LastSeen) },
	"rate":     func(a, b *Row) int { return cmp.Compare(a.PerMinute, b.PerMinute) },
	"refusals": func(a, b *Row) int { return cmp.Compare(refusals(a), refusals(b)) },
	"ready":    func(a, b *Row) int { return cmp.Compare(a.Ready, b.Ready) },
	"status":   func(a, b *Row) int { return cmp.Compare(a.Status, b.Status) },
	"lease":    func(a, b *Row) int { return cmp.Compare(a.LeaseRenew, b.LeaseRenew) },
}

func refusals(r *Row) uint64 {
	var n uint64
	for c := ClassAuth; c <= ClassUpstream; c++ {
		n += r.Classes[c]
	}
	return n
}

// ParseQuery reads a Query from URL parameters: prefix, status, quiet (minutes), qa (quiet after,
// seconds), sort, desc, offset, limit. Unknown values fall back to the defaults rather than failing: the page is read-only.
func ParseQuery(v url.Values) Query {
	q := Query{Prefix: v.Get("prefix"), Status: v.Get("status"), Sort: v.Get("sort"), Desc: v.Get("desc") == "1" || v.Get("desc") == "true"}
	if len(q.Prefix) > 253 {
		q.Prefix = q.Prefix[:253]
	}
	if m, err := strconv.ParseFloat(v.Get("quiet"), 64); err == nil && m > 0 && m < 1e6 {
		q.Quiet = time.Duration(m * float64(time.Minute))
	}
	q.QuietAfter = defaultQuietAfter
	if s, err := strconv.ParseFloat(v.Get("qa"), 64); err == nil && s >= 1 && s < 1e8 {
		q.QuietAfter = time.Duration(s * float64(time.Second))
	}
	if _, ok := sorts[q.Sort]; !ok {
		q.Sort = "name"
	}
	q.Offset, _ = strconv.Atoi(v.Get("offset"))
	q.Limit, _ = strconv.Atoi(v.Get("limit"))
	q.Offset = max(q.Offset, 0)
	if q.Limit <= 0 {
		q.Limit = defaultLimit
	}
	q.Limit = min(q.Limit, maxLimit)
	return q
}

func (q *Query) match(r *Row, now int64) bool {
	if !strings.HasPrefix(r.Name, q.Prefix) {
		return false
	}
	if q.Quiet > 0 && r.LastSeen > 0 && now-r.LastSeen <= q.Quiet.Milliseconds() {
		return false
	}
	switch q.Status {
	case "", "all":
		return true
	case "ready":
		return r.Ready == "True"
	case "notready":
		return r.Ready != "True"
	case "refused":
		return refusals(r) > 0
	default:
		return r.Status == q.Status
	}
}

// Summary counts the whole fleet, whatever the filter.
type Summary struct {
	Devices   int    `json:"devices"`
	Active    int    `json:"active"`
	Revoked   int    `json:"revoked"`
	Pending   int    `json:"pending"`
	Ready     int    `json:"ready"`
	NotReady  int    `json:"notReady"` // a Node exists and is not Ready
	NoNode    int    `json:"noNode"`
	Quiet     int    `json:"quiet"` // no request for longer than the query's QuietAfter (or never)
	Refused   int    `json:"refused"`
	Anonymous uint64 `json:"anonymous"` // requests without a device identity
}

// Page is the fleet table's page for one query.
type Page struct {
	Now     int64    `json:"now"` // unix milliseconds
	Matched int      `json:"matched"`
	Summary Summary  `json:"summary"`
	Kube    string   `json:"kube,omitempty"` // why the Kubernetes view is not live ("" when it is)
	Classes []string `json:"classes"`
	Rows    []Row    `json:"rows"`
}

// page applies q to a snapshot.
func (s *snapshot) page(q Query) Page {
	now := s.at.UnixMilli()
	p := Page{Now: now, Kube: s.kube, Classes: classNames[:]}
	p.Summary.Anonymous = s.anon
	idx := make([]int, 0, len(s.rows))
	for i := range s.rows {
		r := &s.rows[i]
		p.Summary.add(r, now, q.QuietAfter)
		if q.match(r, now) {
			idx = append(idx, i)
		}
	}
	by := sorts[q.Sort]
	if by == nil {
		by = sorts["name"]
	}
	slices.SortFunc(idx, func(i, j int) int {
		a, b := &s.rows[i], &s.rows[j]
		c := by(a, b)
		if c == 0 {
			c = strings.Compare(a.Name, b.Name)
		}
		if q.Desc {
			return -c
		}
		return c
	})
	p.Matched = len(idx)
	lo := min(q.Offset, len(idx))
	hi := min(lo+q.Limit, len(idx))
	p.Rows = make([]Row, 0, hi-lo)
	for _, i := range idx[lo:hi] {
		p.Rows = append(p.Rows, s.rows[i])
	}
	return p
}

func (sm *Summary) add(r *Row, now int64, quietAfter time.Duration) {
	sm.Devices++
	switch r.Status {
	case "active":
		sm.Active++
	case "revoked":
		sm.Revoked++
	default:
		sm.Pending++
	}
	switch r.Ready {
	case "True":
		sm.Ready++
	case "":
		sm.NoNode++
	default:
		sm.NotReady++
	}
	if quietAfter == 0 {
		quietAfter = defaultQuietAfter
	}
	if r.LastSeen == 0 || now-r.LastSeen > quietAfter.Milliseconds() {
		sm.Quiet++
	}
	if refusals(r) > 0 {
		sm.Refused++
	}
}
