package podcidr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// NodeLister lists the Nodes that are not devices' (label picogate.io/device not "true").
type NodeLister func(ctx context.Context) ([]corev1.Node, error)

// Config configures a Reserver.
type Config struct {
	Settings
	// RealNodes lists the Nodes that are not devices'. Required unless Settings.Off.
	RealNodes NodeLister
	// Refresh is how long a decision is reused before the Nodes are listed again. Default 1m.
	Refresh time.Duration
	// Stale is how long a decision that named a block is still used while the Nodes cannot be
	// listed (the cluster CIDR does not change while kube-controller-manager runs). Default 10m.
	Stale time.Duration
	// ListTimeout bounds one listing. Default 3s: a device's Node create waits for it.
	ListTimeout time.Duration
	// Logger receives a line whenever the decision changes. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Reserver decides, and keeps deciding, the pod CIDRs device Nodes are created with. It is safe for
// concurrent use.
type Reserver struct {
	cfg Config

	mu      sync.Mutex
	last    Decision
	decided time.Time // when last was decided from a listing; zero before the first
	logged  string    // the last decision logged
}

// New validates cfg and returns a Reserver. Nothing is listed until the first PodCIDRs.
func New(cfg Config) (*Reserver, error) {
	var errs []error
	if cfg.RealNodes == nil && !cfg.Off {
		errs = append(errs, errors.New("pod CIDR reserver: a node lister is required"))
	}
	if cfg.Off && (len(cfg.Block) > 0 || len(cfg.ClusterCIDRs) > 0) {
		errs = append(errs, errors.New("pod CIDR reserver: turned off, yet given a block or cluster CIDR"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"refresh", cfg.Refresh}, {"stale", cfg.Stale}, {"list timeout", cfg.ListTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("pod CIDR reserver: %s %s is negative", d.name, d.v))
		}
	}
	for _, m := range []int{cfg.NodeMaskV4, cfg.NodeMaskV6} {
		if m < 0 || m > 128 {
			errs = append(errs, fmt.Errorf("pod CIDR reserver: node CIDR mask size %d is not one", m))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	setDefault(&cfg.Refresh, time.Minute)
	setDefault(&cfg.Stale, 10*time.Minute)
	setDefault(&cfg.ListTimeout, 3*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Reserver{cfg: cfg}, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d == 0 {
		*d = v
	}
}

// Decide returns the pod CIDRs for a device Node created now. The decision is reused for
// Config.Refresh; then the real Nodes are listed again, one caller listing while the others wait.
// When they cannot be listed, a block named by a decision younger than Config.Stale is kept, and
// otherwise none is named: a device Node then takes a block of its own, never a wrong one.
func (r *Reserver) Decide(ctx context.Context) Decision {
	if r.cfg.Off {
		return r.note(Decision{Why: "turned off (--device-pod-cidr=none)"})
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.cfg.Now()
	if !r.decided.IsZero() && now.Sub(r.decided) < r.cfg.Refresh {
		return r.last
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ListTimeout)
	defer cancel()
	nodes, err := r.cfg.RealNodes(ctx)
	if err != nil {
		if len(r.last.PodCIDRs) > 0 && now.Sub(r.decided) < r.cfg.Stale {
			return r.last
		}
		return r.noteLocked(Decision{Why: fmt.Sprintf("listing the nodes that are not devices': %v", err)})
	}
	r.last, r.decided = Decide(r.cfg.Settings, nodes), now
	return r.noteLocked(r.last)
}

func (r *Reserver) note(d Decision) Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.noteLocked(d)
}

// noteLocked logs d when it differs from the decision logged last: once per change, not per Node.
func (r *Reserver) noteLocked(d Decision) Decision {
	key := fmt.Sprint(d.PodCIDRs, d.Why)
	if key == r.logged {
		return d
	}
	r.logged = key
	if len(d.PodCIDRs) > 0 {
		r.cfg.Logger.Info("device Nodes share one pod CIDR block", "podCIDRs", slices.Clone(d.Strings()), "from", d.Why)
	} else {
		r.cfg.Logger.Warn("device Nodes get no shared pod CIDR: each takes a block of the cluster CIDR", "why", d.Why)
	}
	return d
}
