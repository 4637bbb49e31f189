package registry

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
)

// The backoff of waitListable: short and capped, because until the first list the gateway can serve no
// device at all.
const (
	firstListBackoffMin = 250 * time.Millisecond
	firstListBackoffMax = 3 * time.Second
	firstListTimeout    = 5 * time.Second
)

// waitListable lists the device records until that succeeds, saying in the log why it cannot and when
// it tries again. client-go's informer would retry on its own, but silently (its watch-list only logs
// at klog verbosity 2) and with a backoff growing to 30 s and more, so a gateway started during an API
// server outage would stay unready for that long after the API server is back. It returns false if ctx
// ends first.
func (r *Cache) waitListable(ctx context.Context) bool {
	opts := metav1.ListOptions{
		Limit:         1,
		LabelSelector: labels.SelectorFromSet(labels.Set{LabelKind: KindDevice}).String(),
		FieldSelector: fields.OneTermEqualSelector("type", SecretType).String(),
	}
	delay := firstListBackoffMin
	for attempt := 1; ; attempt++ {
		lctx, cancel := context.WithTimeout(ctx, firstListTimeout)
		_, err := r.cfg.Client.CoreV1().Secrets(r.cfg.Namespace).List(lctx, opts)
		cancel()
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			if attempt > 1 {
				r.log.Info("device registry: the API server answers; loading the device records", "attempts", attempt)
			}
			return true
		}
		// Every attempt while the delay grows, then one line in ten (every 30 s at the cap).
		if delay < firstListBackoffMax || attempt%10 == 0 {
			r.log.Warn("device registry: cannot list the device records; retrying", "namespace", r.cfg.Namespace, "err", err, "attempt", attempt, "retry_in", delay.String())
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
