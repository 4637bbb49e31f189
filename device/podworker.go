package device

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Crash-loop backoff of restarted containers, as a kubelet's.
const (
	crashBackoffMin   = 10 * time.Second
	crashBackoffMax   = 5 * time.Minute
	crashBackoffReset = 10 * time.Minute
	defaultGrace      = 30 * time.Second
)

// podWorker owns one pod: its containers, its status and its deletion. Only
// the pod loop sends to updates; the worker ends on deletion, when the pod is
// gone, or with the agent's ctx, and has stopped its containers by then.
type podWorker struct {
	a        *Agent
	updates  chan *pod // capacity 1: the newest version replaces a pending one
	done     chan struct{}
	rejected bool // over capacity: reported Failed, never started
	mu       sync.Mutex
	active   bool // counts against Capacity.Pods
	deleted  bool // the worker completed the pod's deletion
}

type ctr struct {
	spec       containerSpec
	app        App
	status     ctrStatus
	cancel     context.CancelFunc // set while running
	restartAt  time.Time          // when waiting in crash-loop backoff
	crashDelay time.Duration
	ranOnce    bool
}

type exit struct {
	i   int
	err error
}

// podRun is the worker's state while it runs; only the worker's goroutine
// touches it.
type podRun struct {
	w       *podWorker
	p       *pod
	st      podStatus
	ctrs    []*ctr
	exits   chan exit
	wg      sync.WaitGroup
	buf     []byte
	bo      *backoff
	dirty   bool
	retryAt time.Time
}

func (w *podWorker) setActive(v bool) {
	w.mu.Lock()
	w.active = v
	w.mu.Unlock()
}

func (w *podWorker) isActive() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.active
}

func (w *podWorker) run(ctx context.Context, p *pod) {
	defer close(w.done)
	r := w.newRun(p)
	defer r.stopAll()
	if w.rejected {
		r.st.phase, r.st.reason = "Failed", "OutOfpods"
		r.st.message = "Pod was rejected: Node didn't have enough resource: pods, capacity " + strconv.Itoa(w.a.cfg.Capacity.Pods)
		r.st.containers = nil
	} else if !p.deleting {
		w.setActive(true)
		for i := range r.ctrs {
			if r.ctrs[i].app != nil {
				r.start(ctx, i)
			}
		}
	}
	r.dirty = true
	for {
		if p.deleting {
			r.terminate(ctx)
			return
		}
		if r.dirty && !time.Now().Before(r.retryAt) {
			if gone := r.patch(ctx); gone {
				return
			}
		}
		timer := time.NewTimer(r.nextWake())
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case np := <-w.updates:
			if np.gone {
				timer.Stop()
				return
			}
			p = np
			r.p.deleting, r.p.grace = np.deleting, np.grace
		case e := <-r.exits:
			r.exited(e, false)
		case <-timer.C:
			r.restartDue(ctx)
		}
		timer.Stop()
	}
}

func (w *podWorker) newRun(p *pod) *podRun {
	a := w.a
	r := &podRun{w: w, p: p, exits: make(chan exit, len(p.containers)), bo: a.newBackoff()}
	now := a.clock.Now()
	r.st.uid = p.uid
	r.st.ip = a.internalIP()
	r.st.startTime = p.startTime
	if r.st.startTime.IsZero() {
		r.st.startTime = now
	}
	sched := p.scheduledAt
	if sched.IsZero() {
		sched = r.st.startTime
	}
	r.st.conds = []condition{
		{typ: "PodScheduled", status: "True", transition: sched},
		{typ: "Initialized", status: "True", transition: r.st.startTime},
		{typ: "ContainersReady"},
		{typ: "Ready"},
	}
	for _, cs := range p.containers {
		c := &ctr{spec: cs, crashDelay: crashBackoffMin}
		c.status = ctrStatus{name: cs.name, image: cs.image, restarts: cs.restarts}
		if app, key := a.lookupApp(cs.image); app != nil {
			c.app = app
			c.status.imageID = "picogate://" + key
		} else {
			c.status.state = ctrState{kind: 'w', reason: "ImageNotBuiltIn", message: a.notBuiltIn(cs.image)}
		}
		r.ctrs = append(r.ctrs, c)
	}
	return r
}

// lookupApp finds the app for an image: exactly, or without its tag or
// digest, so "picogate.io/apps/blink:v1" runs the built-in blink.
func (a *Agent) lookupApp(image string) (App, string) {
	if app, ok := a.apps[image]; ok {
		return app, image
	}
	base := image
	if i := strings.IndexByte(base, '@'); i >= 0 {
		base = base[:i]
	}
	if i := strings.LastIndexByte(base, ':'); i > strings.LastIndexByte(base, '/') {
		base = base[:i]
	}
	if app, ok := a.apps[base]; ok {
		return app, base
	}
	return nil, ""
}

func (a *Agent) notBuiltIn(image string) string {
	names := make([]string, 0, len(a.apps))
	for k := range a.apps {
		names = append(names, k)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return fmt.Sprintf("image %q is not built into device %s, which has no apps", image, a.cfg.Name)
	}
	return fmt.Sprintf("image %q is not built into device %s; built-in apps: %s", image, a.cfg.Name, strings.Join(names, ", "))
}

// start runs container i in a goroutine bound to ctx.
func (r *podRun) start(ctx context.Context, i int) {
	a := r.w.a
	c := r.ctrs[i]
	if c.ranOnce {
		c.status.restarts++
	}
	c.ranOnce = true
	now := a.clock.Now()
	uid := r.p.uid
	if len(uid) > 8 {
		uid = uid[:8]
	}
	id := "picogate://" + uid + "-" + c.spec.name + "-" + strconv.Itoa(c.status.restarts)
	c.status.containerID = id
	c.status.state = ctrState{kind: 'r', startedAt: now}
	c.status.ready, c.status.started = true, true
	c.restartAt = time.Time{}
	cctx, cancel := context.WithCancel(ctx)
	c.cancel = cancel
	info := Container{
		Namespace: r.p.namespace, Pod: r.p.name, Name: c.spec.name, Image: c.spec.image,
		Args: c.spec.args, Env: c.spec.env, Restart: c.status.restarts,
		Log: a.log.With("pod", r.p.key(), "container", c.spec.name),
	}
	a.stats.update(func(s *Status) { s.Containers++ })
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.exits <- exit{i, runApp(cctx, c.app, info)}
	}()
	r.dirty = true
}

// runApp calls the app, turning a panic into a failure of the container
// rather than of the device.
func runApp(ctx context.Context, app App, c Container) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("app panicked: %v", p)
		}
	}()
	return app.Run(ctx, c)
}

// exited records a container's end; unless stopping, the restart policy may
// schedule a restart after the crash-loop backoff.
func (r *podRun) exited(e exit, stopping bool) {
	a := r.w.a
	c := r.ctrs[e.i]
	c.cancel()
	c.cancel = nil
	a.stats.update(func(s *Status) { s.Containers-- })
	now := a.clock.Now()
	term := ctrState{kind: 't', exitCode: 0, reason: "Completed", startedAt: c.status.state.startedAt, finishedAt: now, containerID: c.status.containerID}
	if e.err != nil && !(stopping && errors.Is(e.err, context.Canceled)) {
		term.exitCode, term.reason, term.message = 1, "Error", e.err.Error()
	}
	c.status.ready, c.status.started = false, false
	policy := r.p.restartPolicy
	restart := !stopping && (policy == "Always" || (policy == "OnFailure" && term.exitCode != 0))
	r.dirty = true
	if !restart {
		c.status.state = term
		return
	}
	if now.Sub(term.startedAt) > crashBackoffReset {
		c.crashDelay = crashBackoffMin
	}
	c.status.last = term
	c.restartAt = now.Add(c.crashDelay)
	c.status.state = ctrState{kind: 'w', reason: "CrashLoopBackOff",
		message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", c.crashDelay, c.spec.name, r.p.name, r.p.namespace, r.p.uid)}
	c.crashDelay = min(2*c.crashDelay, crashBackoffMax)
}

// restartDue starts containers whose backoff has passed.
func (r *podRun) restartDue(ctx context.Context) {
	now := r.w.a.clock.Now()
	for i, c := range r.ctrs {
		if !c.restartAt.IsZero() && !now.Before(c.restartAt) {
			r.start(ctx, i)
		}
	}
}

// nextWake is how long the worker may sleep: until the next restart or
// status retry, or a long time.
func (r *podRun) nextWake() time.Duration {
	now := r.w.a.clock.Now()
	next := time.Hour
	for _, c := range r.ctrs {
		if !c.restartAt.IsZero() {
			next = min(next, c.restartAt.Sub(now))
		}
	}
	if r.dirty {
		next = min(next, time.Until(r.retryAt))
	}
	return max(next, 0)
}

// phase follows the kubelet's rules: a container that never started makes
// the pod Pending; one running makes it Running; once all have stopped the
// restart policy decides.
func (r *podRun) phase(final bool) string {
	if r.w.rejected {
		return "Failed"
	}
	var running, waiting, stopped, succeeded int
	for _, c := range r.ctrs {
		switch s := c.status.state; s.kind {
		case 'r':
			running++
		case 't':
			stopped++
			if s.exitCode == 0 {
				succeeded++
			}
		default:
			if c.status.last.kind == 't' {
				stopped++
				if c.status.last.exitCode == 0 {
					succeeded++
				}
			} else {
				waiting++
			}
		}
	}
	switch {
	case final && stopped == len(r.ctrs) && succeeded == stopped:
		return "Succeeded"
	case final:
		return "Failed"
	case waiting > 0:
		return "Pending"
	case running > 0:
		return "Running"
	case stopped > 0:
		switch r.p.restartPolicy {
		case "Always":
			return "Running"
		case "OnFailure":
			if stopped == succeeded {
				return "Succeeded"
			}
			return "Running"
		}
		if stopped == succeeded {
			return "Succeeded"
		}
		return "Failed"
	}
	return "Pending"
}

// refresh recomputes phase and conditions into r.st.
func (r *podRun) refresh(final bool) {
	now := r.w.a.clock.Now()
	if !r.w.rejected {
		r.st.phase = r.phase(final)
		r.st.containers = r.st.containers[:0]
		for _, c := range r.ctrs {
			r.st.containers = append(r.st.containers, c.status)
		}
	}
	terminal := r.st.phase == "Succeeded" || r.st.phase == "Failed"
	if terminal {
		r.w.setActive(false)
	}
	var unready []string
	for _, c := range r.ctrs {
		if !c.status.ready {
			unready = append(unready, c.spec.name)
		}
	}
	status, reason, msg := "True", "", ""
	switch {
	case terminal:
		status, reason = "False", "PodCompleted"
	case len(unready) > 0:
		status, reason = "False", "ContainersNotReady"
		msg = "containers with unready status: [" + strings.Join(unready, " ") + "]"
	}
	for i := 2; i < 4; i++ {
		c := &r.st.conds[i]
		if c.status != status {
			c.transition = now
		}
		c.status, c.reason, c.message = status, reason, msg
	}
}

// patch sends the pod's status. It reports gone when the pod no longer
// exists or is another pod now (uid precondition), which ends the worker.
func (r *podRun) patch(ctx context.Context) (gone bool) {
	r.refresh(false)
	return r.send(ctx)
}

func (r *podRun) send(ctx context.Context) (gone bool) {
	a := r.w.a
	r.buf = appendPodStatusPatch(r.buf[:0], &r.st)
	path := "/api/v1/namespaces/" + r.p.namespace + "/pods/" + r.p.name + "/status"
	err := a.tr.do(ctx, "PATCH", path, ctypeSMP, r.buf, nil)
	switch {
	case err == nil:
		r.dirty = false
		r.bo.reset()
		return false
	case IsCode(err, 404):
		a.log.Info("pod gone; stopping its containers", "pod", r.p.key())
		return true
	case IsCode(err, 403), IsCode(err, 409), IsCode(err, 422):
		// A pod no longer bound here (the Node authorizer answers 403 for
		// a pod it cannot relate to the node, even a deleted one), a uid
		// precondition that failed (422: the pod was replaced), or a
		// status refused: sending it again would not help, and the
		// watch's DELETED event ends this worker.
		a.fail(ctx, "patching pod status", fmt.Errorf("pod %s: giving up on this status: %w", r.p.key(), err))
		r.dirty = false
		return false
	}
	a.fail(ctx, "patching pod status", fmt.Errorf("pod %s: %w", r.p.key(), err))
	r.retryAt = time.Now().Add(r.bo.retryDelay(err))
	return false
}

// stopAll cancels every running container and waits for all of them.
func (r *podRun) stopAll() {
	for _, c := range r.ctrs {
		if c.cancel != nil {
			c.cancel()
		}
	}
	r.wg.Wait()
	for {
		select {
		case e := <-r.exits:
			r.exited(e, true)
		default:
			return
		}
	}
}
