package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// watchAnnotation is the pod annotation each fan-out change bumps; watchers look for its new value.
const watchAnnotation = "picobench/rev"

// watchResult is one round of fan-out.
type watchResult struct {
	all       []time.Duration // per change: until the last of the watchers had it
	delivered int64           // events that arrived in time
	lost      int64           // watcher × change pairs that did not arrive within the timeout
}

// arrival is a watcher seeing a revision.
type arrival struct {
	rev int64
	at  time.Time
}

// runWatch opens n watches through t on the pods of node bench-1 (the same device's credential in
// token mode, so every target forwards the same watch), then repeats times changes the one pod there
// and times how long until every watcher has the event.
func (l *lab) runWatch(ctx context.Context, t *target, n, repeats int, window func(bool)) (watchResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	scheme := "http://"
	if t.endpoint.TLS != nil {
		scheme = "https://"
	}
	tr := &http.Transport{TLSClientConfig: t.endpoint.TLS, MaxIdleConnsPerHost: n, DisableCompression: true}
	defer tr.CloseIdleConnections()
	url := scheme + t.endpoint.Addr + "/api/v1/pods?fieldSelector=spec.nodeName%3D" + l.nodes[0] + "&watch=1"
	arrivals := make(chan arrival, n*4)
	var ready sync.WaitGroup
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	var openErr atomic.Value
	for range n {
		ready.Add(1)
		wg.Go(func() {
			if err := l.watchOne(ctx, tr, url, t.authHeader(0), arrivals, ready.Done); err != nil && ctx.Err() == nil {
				openErr.Store(err)
			}
		})
	}
	if !waitGroupTimeout(&ready, 30*time.Second) {
		return watchResult{}, fmt.Errorf("not all %d watches got their first event within 30s (%v)", n, openErr.Load())
	}
	drain(arrivals)
	window(true)
	defer window(false)
	var res watchResult
	for range repeats {
		rev := l.watchRev.Add(1)
		start := time.Now()
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, watchAnnotation, strconv.FormatInt(rev, 10))
		if _, err := l.admin.CoreV1().Pods(watchNamespace).Patch(ctx, watchPod, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			return res, fmt.Errorf("changing the watched pod: %w", err)
		}
		got, last := 0, start
		timeout := time.After(10 * time.Second)
	collect:
		for got < n {
			select {
			case a := <-arrivals:
				if a.rev == rev {
					got++
					last = a.at
				}
			case <-timeout:
				break collect
			}
		}
		res.delivered += int64(got)
		if got < n {
			res.lost += int64(n - got)
			continue
		}
		res.all = append(res.all, last.Sub(start))
		time.Sleep(20 * time.Millisecond)
	}
	return res, nil
}

// watchOne holds one watch open until ctx ends, reporting each revision of the pod it sees. The
// first event (the pod's ADDED) marks it ready.
func (l *lab) watchOne(ctx context.Context, tr *http.Transport, url, auth string, out chan<- arrival, ready func()) error {
	once := sync.OnceFunc(ready)
	defer once() // a failed watch must not hold up the others' wait; the timeout reports it
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "k3s-pico-node/1.0")
	req.Header.Set("Accept", "application/json")
	if auth != "" {
		k, v, _ := strings.Cut(auth, ": ")
		req.Header.Set(k, v)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("opening watch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("opening watch: status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	marker := []byte(`"` + watchAnnotation + `":"`)
	for sc.Scan() {
		at := time.Now()
		line := sc.Bytes()
		if i := bytes.Index(line, marker); i >= 0 {
			rest := line[i+len(marker):]
			if j := bytes.IndexByte(rest, '"'); j > 0 {
				if rev, err := strconv.ParseInt(string(rest[:j]), 10, 64); err == nil {
					select {
					case out <- arrival{rev: rev, at: at}:
					default: // the collector only wants current revisions; never block the stream
					}
				}
			}
		}
		once()
	}
	return sc.Err()
}

func waitGroupTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func drain[T any](ch chan T) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// addWatch adds a fan-out round: latencies are "all N have it" per change; CPU is divided by the
// events delivered.
func (c *cell) addWatch(r watchResult, u usage) {
	c.requests += int64(len(r.all))
	c.events += r.delivered
	c.latencies = append(c.latencies, r.all...)
	if r.lost > 0 {
		c.addErrors(map[string]int64{"event not delivered within 10s": r.lost})
	}
	c.addUse(u, u.PeakRSS > 0)
}
