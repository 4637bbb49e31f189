package device

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// errGone is a watch that the API server can no longer resume: re-list.
var errGone = errors.New("watch resource version too old (410 Gone)")

// podLoop lists the pods bound to the node, then watches from the list's
// resourceVersion, re-listing after 410 Gone and reconnecting with jittered
// backoff after failures. It stops every pod worker before returning.
func (a *Agent) podLoop(ctx context.Context) {
	m := &podManager{a: a, ctx: ctx, workers: map[string]*podWorker{}, finished: map[string]bool{}}
	defer m.wg.Wait()
	bo := a.newBackoff()
	rv := ""
	for ctx.Err() == nil {
		if rv == "" {
			l, err := a.listPods(ctx)
			if err != nil {
				a.fail(ctx, "listing pods", err)
				sleep(ctx, bo.retryDelay(err))
				continue
			}
			m.resync(l.pods)
			rv = l.rv
		}
		newRV, connected, err := a.watchPods(ctx, rv, m.handle)
		if connected {
			bo.reset()
		}
		rv = newRV
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errGone):
			a.log.Info("pod watch expired; listing again")
			rv = ""
		case err != nil:
			a.fail(ctx, "watching pods", err)
			sleep(ctx, bo.retryDelay(err))
		}
	}
}

// podsQuery selects the pods bound to the node: the only pod list the Node
// authorizer allows a node.
func (a *Agent) podsQuery() string {
	return "/api/v1/pods?fieldSelector=" + url.QueryEscape("spec.nodeName="+a.cfg.Name)
}

func (a *Agent) listPods(ctx context.Context) (*podList, error) {
	var l *podList
	err := a.tr.do(ctx, "GET", a.podsQuery(), "", nil, func(_ int, v jval) error {
		var err error
		l, err = parsePodList(v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing pods of node %q: %w", a.cfg.Name, err)
	}
	a.stats.update(func(s *Status) { s.Lists++ })
	return l, nil
}

// watchPods streams pod events to handle until the server ends the watch
// (nil error) or something fails. It returns the newest resourceVersion seen
// and whether the watch was established.
func (a *Agent) watchPods(ctx context.Context, rv string, handle func(*pod)) (string, bool, error) {
	timeout := a.jitter(a.cfg.WatchTimeout)
	secs := max(int(timeout/time.Second), 1)
	// The server ends the watch after timeoutSeconds; a deadline a little
	// later catches a connection that died silently.
	wctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()
	path := a.podsQuery() + "&watch=1&resourceVersion=" + url.QueryEscape(rv) +
		"&allowWatchBookmarks=true&timeoutSeconds=" + strconv.Itoa(secs)
	req, err := a.tr.newRequest(wctx, "GET", path, "", nil)
	if err != nil {
		return rv, false, err
	}
	a.tr.stats.request()
	a.stats.update(func(s *Status) { s.Watches++ })
	resp, err := a.tr.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			a.tr.stats.fail(kindOf(wctx, err))
		}
		return rv, false, fmt.Errorf("watching pods: %w", err)
	}
	defer resp.Body.Close()
	a.tr.clock.observe(resp.Header.Get("Date"))
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		ae := statusError("GET", path, resp, body)
		a.tr.stats.fail(httpKind(ae.Code))
		if ae.Code == http.StatusGone {
			return rv, false, errGone
		}
		return rv, false, ae
	}
	br := bufio.NewReaderSize(resp.Body, 4096)
	var line []byte
	for {
		line, err = readLine(br, line[:0], a.cfg.MaxResponseBytes)
		if err == io.EOF {
			return rv, true, nil
		}
		if err != nil {
			if ctx.Err() == nil {
				a.tr.stats.fail(kindOf(wctx, err))
			}
			return rv, true, fmt.Errorf("reading pod watch: %w", err)
		}
		if len(line) == 0 {
			continue
		}
		var gone bool
		rv, gone, err = a.handleEvent(line, rv, handle)
		if gone {
			return rv, true, errGone
		}
		if err != nil {
			a.tr.stats.fail(KindDecode)
			return rv, true, err
		}
	}
}

// handleEvent applies one watch event and returns the resourceVersion to
// resume from.
func (a *Agent) handleEvent(line []byte, rv string, handle func(*pod)) (string, bool, error) {
	a.stats.update(func(s *Status) { s.PodEvents++ })
	ev, err := parseWatchEvent(line)
	if err != nil {
		return rv, false, err
	}
	switch ev.typ {
	case "BOOKMARK":
		if nrv := ev.obj.get("metadata", "resourceVersion").strOr(""); nrv != "" {
			rv = nrv
		}
		return rv, false, nil
	case "ERROR":
		code, _ := ev.obj.get("code").int()
		if code == http.StatusGone {
			return rv, true, nil
		}
		return rv, false, &APIError{Method: "GET", Path: "pod watch", Code: int(code),
			Reason: ev.obj.get("reason").strOr(""), Message: ev.obj.get("message").strOr("")}
	}
	p, err := parsePod(ev.obj)
	if err != nil {
		return rv, false, fmt.Errorf("pod watch event: %w", err)
	}
	p.gone = ev.typ == "DELETED"
	handle(p)
	if p.rv != "" {
		rv = p.rv
	}
	return rv, false, nil
}

// readLine reads one newline-terminated line into acc, refusing lines over
// max bytes. A final line without a newline is a truncated event: an error.
func readLine(br *bufio.Reader, acc []byte, max int) ([]byte, error) {
	for {
		chunk, err := br.ReadSlice('\n')
		if len(acc)+len(chunk) > max {
			return acc, fmt.Errorf("watch event over %d bytes", max)
		}
		acc = append(acc, chunk...)
		switch {
		case err == nil:
			return acc[:len(acc)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(acc) > 0:
			return acc, io.ErrUnexpectedEOF
		default:
			return acc, err
		}
	}
}

// podManager maps pods to their workers. Only the pod loop calls it.
type podManager struct {
	a        *Agent
	ctx      context.Context
	wg       sync.WaitGroup
	workers  map[string]*podWorker // by uid
	finished map[string]bool       // uids whose deletion a worker completed
}

// handle routes one pod version to its worker, starting one when needed.
func (m *podManager) handle(p *pod) {
	m.prune()
	if w, ok := m.workers[p.uid]; ok {
		w.push(p)
		if p.gone {
			delete(m.workers, p.uid)
		}
		m.count()
		return
	}
	if p.gone {
		delete(m.finished, p.uid)
		return
	}
	if m.finished[p.uid] || p.nodeName != m.a.cfg.Name || (p.terminal() && !p.deleting) {
		return
	}
	active := 0
	for _, w := range m.workers {
		if w.isActive() {
			active++
		}
	}
	w := &podWorker{a: m.a, updates: make(chan *pod, 1), done: make(chan struct{})}
	w.rejected = !p.deleting && !p.terminal() && active >= m.a.cfg.Capacity.Pods
	m.workers[p.uid] = w
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		w.run(m.ctx, p)
	}()
	m.count()
}

// resync applies a fresh list: pods missing from it are gone.
func (m *podManager) resync(pods []*pod) {
	seen := make(map[string]bool, len(pods))
	for _, p := range pods {
		seen[p.uid] = true
		m.handle(p)
	}
	for uid, w := range m.workers {
		if !seen[uid] {
			w.push(&pod{uid: uid, gone: true})
			delete(m.workers, uid)
		}
	}
	for uid := range m.finished {
		if !seen[uid] {
			delete(m.finished, uid)
		}
	}
	m.count()
}

// prune forgets workers that ended.
func (m *podManager) prune() {
	for uid, w := range m.workers {
		select {
		case <-w.done:
			w.mu.Lock()
			if w.deleted {
				m.finished[uid] = true
			}
			w.mu.Unlock()
			delete(m.workers, uid)
		default:
		}
	}
}

func (m *podManager) count() {
	n := len(m.workers)
	m.a.stats.update(func(s *Status) { s.Pods = n })
}

// push hands the worker the newest version of its pod, replacing one it has
// not taken yet. A worker that ended takes nothing, which is fine.
func (w *podWorker) push(p *pod) {
	for {
		select {
		case w.updates <- p:
			return
		case <-w.done:
			return
		default:
		}
		select {
		case <-w.updates:
		default:
		}
	}
}
