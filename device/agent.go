package device

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Agent is one device acting as a Kubernetes node through the gateway.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	spec  nodeSpec
	clock *clock
	stats *stats
	tr    *transport
	apps  map[string]App

	started atomic.Bool

	mu      sync.Mutex
	node    nodeStatus
	uid     string
	nodeGen int           // bumped on each (re)registration
	dirty   chan struct{} // status changed: patch now

	configs sync.Map // "namespace/name" → *configCopy: the last ConfigMap read, for If-None-Match
}

// New checks cfg, reporting every problem at once, and returns an Agent
// ready to Run.
func New(cfg Config) (*Agent, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("device config: %w", err)
	}
	a := &Agent{
		cfg:   c,
		log:   c.Logger.With("device", c.Name),
		clock: &clock{now: c.Now, server: c.ServerClock},
		stats: &stats{s: Status{Name: c.Name}},
		apps:  maps.Clone(c.Apps),
		dirty: make(chan struct{}, 1),
		spec: nodeSpec{
			name: c.Name, board: c.Board, instanceType: c.InstanceType,
			cpu: c.Capacity.CPU, memory: c.Capacity.Memory, pods: c.Capacity.Pods,
			version: c.Version, bootID: strconv.FormatUint(rand.Uint64(), 16),
		},
	}
	a.node.ip = c.InternalIP
	if c.Key != nil {
		a.cfg.Signer = &HMACSigner{Name: c.Name, Key: c.Key, Now: a.clock.Now}
	}
	var learn func(net.Addr)
	if c.InternalIP == "" {
		learn = a.learnAddr
	}
	a.tr = newTransport(&a.cfg, a.clock, a.stats, learn, a.log)
	return a, nil
}

// Status returns a snapshot of the agent's state and counters.
func (a *Agent) Status() Status {
	return a.stats.snapshot(a.clock.Now(), a.cfg.LeaseDuration)
}

// Name is the device's node name.
func (a *Agent) Name() string { return a.cfg.Name }

// Run registers the node, then keeps its Lease and status fresh and runs the
// pods bound to it until ctx is done. Failures are retried with backoff, so
// Run returns only when ctx is done (nil), or at once if called twice. Every
// goroutine it starts, apps included, has ended when it returns.
func (a *Agent) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("device agent: Run called twice")
	}
	if a.internalIP() == "" {
		a.tr.probeLocalAddr(ctx)
	}
	if a.cfg.Key != nil && a.cfg.ServerClock {
		a.tr.syncClock(ctx) // the first signed request must already be on the gateway's time
	}
	if !a.register(ctx) {
		return nil
	}
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){a.leaseLoop, a.statusLoop, a.podLoop} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// learnAddr takes the node's InternalIP from the first connection's local
// address: the address the gateway sees, so the one pods should report.
func (a *Agent) learnAddr(addr net.Addr) {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.node.ip != "" {
		return
	}
	a.node.ip = tcp.IP.String()
	a.markDirty()
}

// markDirty asks the status loop for a patch now.
func (a *Agent) markDirty() {
	select {
	case a.dirty <- struct{}{}:
	default:
	}
}

// internalIP returns the node's address (may be "" before the first
// connection).
func (a *Agent) internalIP() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.node.ip
}

// nodeUID returns the registered Node's uid and registration generation.
func (a *Agent) nodeUID() (string, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.uid, a.nodeGen
}

// fail records an error for Status and the log, unless ctx ended.
func (a *Agent) fail(ctx context.Context, what string, err error) {
	if ctx.Err() != nil {
		return
	}
	a.stats.lastError(err, a.clock.Now())
	a.log.Warn(what+" failed", "err", err)
}

// jitter shortens d by up to the configured fraction, at random, so the
// fleet's requests spread out without any device being late.
func (a *Agent) jitter(d time.Duration) time.Duration {
	if a.cfg.Jitter <= 0 {
		return d
	}
	return d - time.Duration(rand.Float64()*a.cfg.Jitter*float64(d))
}

// backoff is a jittered exponential backoff ("equal jitter": between half
// and all of the current step).
type backoff struct {
	min, max, cur time.Duration
}

func (a *Agent) newBackoff() *backoff {
	return &backoff{min: a.cfg.BackoffMin, max: a.cfg.BackoffMax}
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	half := b.cur / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

func (b *backoff) reset() { b.cur = 0 }

// retryDelay is how long to wait after err: the server's Retry-After when it
// gave one (429, 503), else the next backoff step.
func (b *backoff) retryDelay(err error) time.Duration {
	if d := retryAfter(err); d > 0 {
		b.next() // still grow, in case the hint is too optimistic
		return d
	}
	return b.next()
}

// sleep waits d or until ctx is done, reporting whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
