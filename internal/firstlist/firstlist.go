// Package firstlist waits for an informer's first list to be possible, saying in the log why it is not.
// client-go's informers retry on their own, but silently (the watch-list only logs at klog verbosity 2)
// and with a backoff growing to 30 s and more: a gateway started during an API server outage, or with a
// credential missing a right, would stay unready that long, with nothing in its log saying why.
package firstlist

import (
	"context"
	"log/slog"
	"time"
)

// The backoff: short and capped, because until the first list the gateway serves no device.
const (
	backoffMin = 250 * time.Millisecond
	backoffMax = 3 * time.Second
	timeout    = 5 * time.Second // each attempt
)

// Config says what to list and what to log.
type Config struct {
	// List makes one small list request (Limit 1) of what the informer will load.
	List func(ctx context.Context) error
	// Logger receives the lines below.
	Logger *slog.Logger
	// Failing is logged at Warn, with the error, the attempt and the delay, for every attempt while the
	// backoff grows, then for one in ten (every 30 s at the cap).
	Failing string
	// Recovered is logged at Info when a list succeeds after failed ones.
	Recovered string
	// Attrs are added to the Failing line.
	Attrs []any
}

// Wait lists until that succeeds and reports true, or reports false once ctx ends.
func Wait(ctx context.Context, cfg Config) bool {
	delay := backoffMin
	for attempt := 1; ; attempt++ {
		lctx, cancel := context.WithTimeout(ctx, timeout)
		err := cfg.List(lctx)
		cancel()
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			if attempt > 1 {
				cfg.Logger.Info(cfg.Recovered, "attempts", attempt)
			}
			return true
		}
		if delay < backoffMax || attempt%10 == 0 {
			cfg.Logger.Warn(cfg.Failing, append(cfg.Attrs[:len(cfg.Attrs):len(cfg.Attrs)], "err", err, "attempt", attempt, "retry_in", delay.String())...)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		delay = min(2*delay, backoffMax)
	}
}
