package enroll

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/picogate/picogate/internal/registry"
)

// ServiceConfig configures the enrollment feature's background work.
type ServiceConfig struct {
	// Tokens is swept for expired tokens; Store completes rotations. Both required.
	Tokens *Tokens
	Store  *registry.Store
	// Keys is loaded at start, so the gateway key Secret exists before the first hmac enrollment (and
	// retried until it is). Optional.
	Keys *GatewayKeys
	// SweepInterval is how often expired tokens are deleted. Default 1m.
	SweepInterval time.Duration
	Logger        *slog.Logger
}

// Service runs what enrollment needs in the background: deleting expired tokens, and promoting a
// rotated credential once the device has used it.
type Service struct {
	cfg      ServiceConfig
	log      *slog.Logger
	promote  chan promotion
	inflight sync.Map // device name → struct{}: a promotion is queued or running
}

type promotion struct {
	name string
	used []byte
}

// NewService validates cfg and returns a Service; Run starts it.
func NewService(cfg ServiceConfig) (*Service, error) {
	var errs []error
	if cfg.Tokens == nil || cfg.Store == nil {
		errs = append(errs, errors.New("enrollment service: token and device stores are required"))
	}
	if cfg.SweepInterval < 0 {
		errs = append(errs, errors.New("enrollment service: sweep interval must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, log: cfg.Logger.With("component", "enroll"), promote: make(chan promotion, 256)}, nil
}

// Promote asks for device name's rotated credential (used: the token hash or key it just authenticated
// with) to become its credential. It never blocks the request that calls it: a promotion already queued
// for the device absorbs it, and a full queue drops it (the device's next request asks again).
func (s *Service) Promote(name string, used []byte) {
	if _, busy := s.inflight.LoadOrStore(name, struct{}{}); busy {
		return
	}
	select {
	case s.promote <- promotion{name: name, used: append([]byte(nil), used...)}:
	default:
		s.inflight.Delete(name)
	}
}

// Run sweeps and promotes until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if s.cfg.Keys != nil {
		go s.loadKey(ctx)
	}
	tick := time.NewTicker(s.cfg.SweepInterval)
	defer tick.Stop()
	s.sweep(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			s.sweep(ctx)
		case p := <-s.promote:
			s.doPromote(ctx, p)
		}
	}
}

// loadKey reads (or creates) the gateway key until that succeeds, so it is ready before a board needs
// it; a request that comes first loads it itself.
func (s *Service) loadKey(ctx context.Context) {
	delay := time.Second
	for {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		k, err := s.cfg.Keys.Get(lctx)
		cancel()
		if err == nil {
			s.log.Info("gateway key for hmac key agreement loaded; firmware pins its public half", "public_key", k)
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("loading the gateway key; hmac enrollments and rotations wait for it", "err", err, "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

func (s *Service) sweep(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n, err := s.cfg.Tokens.Sweep(ctx)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("sweeping expired enrollment tokens", "err", err)
	}
	if n > 0 {
		s.log.Info("deleted expired enrollment tokens", "count", n)
	}
}

func (s *Service) doPromote(ctx context.Context, p promotion) {
	defer s.inflight.Delete(p.name)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	promoted, err := s.cfg.Store.PromoteNext(ctx, p.name, p.used)
	if err != nil {
		s.log.Warn("completing a rotation", "device", p.name, "err", err)
		return
	}
	if promoted {
		s.log.Info("rotated credential in use; the old one is retired", "device", p.name)
	}
}
