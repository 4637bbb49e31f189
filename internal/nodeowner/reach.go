package nodeowner

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The backoff of waitListable, as in registry: short and capped, because until the first list the
// gateway serves no device.
const (
	firstListBackoffMin = 250 * time.Millisecond
	firstListBackoffMax = 3 * time.Second
	firstListTimeout    = 5 * time.Second
)

// waitListable lists one Node until that succeeds, logging why it cannot, so a missing "list nodes"
// permission (an old deploy/rbac.yaml) is one clear line in the log instead of client-go's silent
// retries. It returns false if ctx ends first.
func (c *Cache) waitListable(ctx context.Context) bool {
	delay := firstListBackoffMin
	for attempt := 1; ; attempt++ {
		lctx, cancel := context.WithTimeout(ctx, firstListTimeout)
		_, err := c.cfg.Client.Resource(nodesResource()).List(lctx, metav1.ListOptions{Limit: 1})
		cancel()
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			if attempt > 1 {
				c.log.Info("node ownership: the API server answers; loading the nodes", "attempts", attempt)
			}
			return true
		}
		if delay < firstListBackoffMax || attempt%10 == 0 {
			c.log.Warn("node ownership: cannot list nodes (the gateway's credential needs get, list and watch on nodes: deploy/rbac.yaml); retrying",
				"err", err, "attempt", attempt, "retry_in", delay.String())
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		delay = min(2*delay, firstListBackoffMax)
	}
}
