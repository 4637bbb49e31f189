package device

import (
	"context"
	"fmt"
	"time"
)

// terminate stops a pod that is being deleted and completes the deletion
// like a kubelet: containers are asked to stop and given the pod's grace
// period, the final status is reported, then the pod is deleted with no
// further grace and a uid precondition.
func (r *podRun) terminate(ctx context.Context) {
	a := r.w.a
	r.w.setActive(false)
	grace := defaultGrace
	if r.p.grace >= 0 {
		grace = time.Duration(r.p.grace) * time.Second
	}
	running := 0
	for _, c := range r.ctrs {
		switch {
		case c.cancel != nil:
			c.cancel()
			running++
		case !c.restartAt.IsZero():
			c.status.state, c.status.last = c.status.last, ctrState{}
			c.restartAt = time.Time{}
		}
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	for running > 0 {
		select {
		case <-ctx.Done():
			return
		case e := <-r.exits:
			r.exited(e, true)
			running--
		case <-deadline.C:
			// An app that ignores its ctx cannot be killed; report what a
			// kubelet would and let stopAll wait for it.
			now := a.clock.Now()
			for _, c := range r.ctrs {
				if c.cancel != nil {
					c.status.state = ctrState{kind: 't', exitCode: 137, reason: "Error",
						message: "did not stop within the grace period", startedAt: c.status.state.startedAt,
						finishedAt: now, containerID: c.status.containerID}
					c.status.ready, c.status.started = false, false
				}
			}
			running = 0
		}
	}
	if r.p.grace == 0 {
		// Grace 0 (a forced deletion, or any deletion of a pod already
		// Succeeded or Failed) means the API server removes the object
		// itself: a status or DELETE now would only meet a 404.
		return
	}
	r.refresh(true)
	for r.dirty = true; r.dirty; {
		if r.send(ctx) {
			return // gone already
		}
		if r.dirty && !r.waitRetry(ctx) {
			return
		}
	}
	r.completeDeletion(ctx)
}

// completeDeletion deletes the pod, retrying until the API server answers.
func (r *podRun) completeDeletion(ctx context.Context) {
	a := r.w.a
	path := "/api/v1/namespaces/" + r.p.namespace + "/pods/" + r.p.name
	for {
		r.buf = appendDeleteOptions(r.buf[:0], r.p.uid)
		err := a.tr.do(ctx, "DELETE", path, ctypeJSON, r.buf, nil)
		switch {
		case err == nil, IsCode(err, 404), IsCode(err, 409):
			r.w.mu.Lock()
			r.w.deleted = true
			r.w.mu.Unlock()
			a.log.Info("pod deleted", "pod", r.p.key())
			return
		case IsCode(err, 403):
			a.fail(ctx, "deleting pod", fmt.Errorf("pod %s stays Terminating until removed by someone allowed to: %w", r.p.key(), err))
			return
		}
		a.fail(ctx, "deleting pod", fmt.Errorf("pod %s: %w", r.p.key(), err))
		r.retryAt = time.Now().Add(r.bo.retryDelay(err))
		if !r.waitRetry(ctx) {
			return
		}
	}
}

// waitRetry sleeps until retryAt, returning false if ctx ends or the pod
// disappears meanwhile.
func (r *podRun) waitRetry(ctx context.Context) bool {
	t := time.NewTimer(time.Until(r.retryAt))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case np := <-r.w.updates:
			if np.gone {
				return false
			}
		case <-t.C:
			return true
		}
	}
}
