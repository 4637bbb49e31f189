package device

import (
	"context"
	"errors"
	"fmt"
	"time"
)

const (
	ctypeJSON  = "application/json"
	ctypeSMP   = "application/strategic-merge-patch+json"
	ctypeMerge = "application/merge-patch+json"
)

// register creates the Node, or adopts an existing one, retrying until it
// succeeds or ctx ends (false).
func (a *Agent) register(ctx context.Context) bool {
	bo := a.newBackoff()
	buf := make([]byte, 0, 2048)
	for {
		err := a.registerOnce(ctx, &buf)
		if err == nil {
			return true
		}
		a.fail(ctx, "registering node", err)
		if !sleep(ctx, bo.retryDelay(err)) {
			return false
		}
	}
}

// registerOnce POSTs the Node; on 409 it patches the labels of the existing
// one and asks for a full status patch, since a status sent with the POST
// was not applied to it.
func (a *Agent) registerOnce(ctx context.Context, buf *[]byte) error {
	healthErr := a.health()
	now := a.clock.Now()
	a.mu.Lock()
	a.node.conds = newConditions(now)
	a.node.setReady(healthErr, now)
	*buf = appendNodeCreate((*buf)[:0], &a.spec, &a.node, now)
	a.mu.Unlock()

	var uid string
	existed := false
	err := a.tr.doHandling(ctx, "POST", "/api/v1/nodes", ctypeJSON, *buf, 409, func(_ int, v jval) error {
		uid = v.get("metadata", "uid").strOr("")
		return nil
	})
	if IsCode(err, 409) {
		existed = true
		*buf = appendNodeLabelsPatch((*buf)[:0], &a.spec)
		err = a.tr.do(ctx, "PATCH", "/api/v1/nodes/"+a.cfg.Name, ctypeSMP, *buf, func(_ int, v jval) error {
			uid = v.get("metadata", "uid").strOr("")
			a.mu.Lock()
			a.node.adoptTransitions(v)
			a.mu.Unlock()
			if !hasMCUTaint(v) {
				a.log.Warn("node has no taint " + MCUTaint + "=true:NoSchedule and a node may not add its own taints; ask an operator to add it, or delete the node so the device re-creates it")
			}
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("registering node %q: %w", a.cfg.Name, err)
	}
	if uid == "" {
		return fmt.Errorf("registering node %q: response has no metadata.uid", a.cfg.Name)
	}
	a.mu.Lock()
	a.uid = uid
	a.nodeGen++
	a.mu.Unlock()
	a.stats.update(func(s *Status) {
		s.Registered = true
		s.NodeUID = uid
	})
	a.log.Info("node registered", "uid", uid, "existed", existed)
	if existed {
		a.markDirty()
	}
	return nil
}

func hasMCUTaint(node jval) bool {
	found := false
	node.get("spec", "taints").each(func(_, t jval) bool {
		found = t.get("key").equal(MCUTaint) && t.get("effect").equal("NoSchedule")
		return !found
	})
	return found
}

// health asks Config.Health, turning a panic into an error: a firmware bug
// should make the node NotReady, not kill the agent.
func (a *Agent) health() (err error) {
	if a.cfg.Health == nil {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("health check panicked: %v", r)
		}
	}()
	return a.cfg.Health()
}

// statusLoop patches node status when something changed, and otherwise often
// enough that no gap exceeds StatusReportInterval. After a 409 registration
// the first patch is a full one (capacity, nodeInfo).
func (a *Agent) statusLoop(ctx context.Context) {
	buf := make([]byte, 0, 1536)
	bo := a.newBackoff()
	last := a.clock.Now() // the POST carried the status
	full := false
	_, gen := a.nodeUID()
	wait := a.jitter(a.cfg.StatusCheckInterval)
	retry := false // the last patch failed: patch again once wait (the backoff) has passed
	for {
		timer := time.NewTimer(wait)
		dirty := false
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-a.dirty:
			dirty = true
		case <-timer.C:
		}
		timer.Stop()
		if _, g := a.nodeUID(); g != gen {
			gen, full, dirty = g, true, true // registered again: status not applied
		}
		healthErr := a.health()
		now := a.clock.Now()
		a.mu.Lock()
		changed := a.node.setReady(healthErr, now)
		a.mu.Unlock()
		due := now.Sub(last)+a.cfg.StatusCheckInterval > a.cfg.StatusReportInterval
		if !changed && !dirty && !due && !retry {
			wait = a.jitter(a.cfg.StatusCheckInterval)
			continue
		}
		err := a.patchStatus(ctx, &buf, now, full)
		switch {
		case err == nil:
			last, full, retry = now, false, false
			bo.reset()
			wait = a.jitter(a.cfg.StatusCheckInterval)
			continue
		case IsCode(err, 404):
			// The Node was deleted under us: make it again, like a board
			// that reboots would.
			a.fail(ctx, "patching node status", err)
			if !a.register(ctx) {
				return
			}
			last = a.clock.Now()
			_, gen = a.nodeUID()
			wait = 0
			continue
		}
		a.fail(ctx, "patching node status", err)
		// Retry even if nothing else changes, but only after the backoff (or the server's Retry-After):
		// marking the status dirty here would skip the wait and hammer a gateway that said 503 or 429.
		retry = true
		wait = bo.retryDelay(err)
	}
}

func (a *Agent) patchStatus(ctx context.Context, buf *[]byte, now time.Time, full bool) error {
	a.mu.Lock()
	*buf = appendNodeStatusPatch((*buf)[:0], &a.spec, &a.node, now, full)
	a.mu.Unlock()
	err := a.tr.do(ctx, "PATCH", "/api/v1/nodes/"+a.cfg.Name+"/status", ctypeSMP, *buf, nil)
	if err != nil {
		return fmt.Errorf("patching status of node %q: %w", a.cfg.Name, err)
	}
	a.stats.update(func(s *Status) { s.StatusPatches++ })
	return nil
}

// leaseLoop creates the node's Lease, then renews it every LeaseInterval
// (jittered shorter, never longer). Failures are retried with backoff capped
// at the interval, so renewals resume as soon as the gateway is back.
func (a *Agent) leaseLoop(ctx context.Context) {
	buf := make([]byte, 0, 512)
	bo := a.newBackoff()
	path := "/apis/coordination.k8s.io/v1/namespaces/" + leaseNamespace + "/leases"
	created, ownerGen := false, -1
	for {
		uid, gen := a.nodeUID()
		now := a.clock.Now()
		var err error
		if !created {
			buf = appendLeaseCreate(buf[:0], a.cfg.Name, uid, a.cfg.LeaseDuration, now)
			err = a.tr.doHandling(ctx, "POST", path, ctypeJSON, buf, 409, nil)
			if IsCode(err, 409) {
				created, ownerGen = true, -1 // someone's Lease: take it over below
			}
		}
		if created {
			buf = appendLeasePatch(buf[:0], a.cfg.Name, uid, a.cfg.LeaseDuration, now, gen != ownerGen)
			err = a.tr.do(ctx, "PATCH", path+"/"+a.cfg.Name, ctypeMerge, buf, nil)
			if IsCode(err, 404) {
				created = false
			}
		}
		var wait time.Duration
		if err == nil {
			created, ownerGen = true, gen
			a.stats.leaseRenewed(a.clock.Now(), a.cfg.LeaseInterval)
			bo.reset()
			wait = a.jitter(a.cfg.LeaseInterval)
		} else {
			a.fail(ctx, "renewing lease", fmt.Errorf("lease %s/%s: %w", leaseNamespace, a.cfg.Name, err))
			wait = bo.retryDelay(err)
			if retryAfter(err) == 0 {
				wait = min(wait, a.cfg.LeaseInterval)
			}
			if errors.Is(err, ctx.Err()) {
				return
			}
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}
