// Package health answers /healthz and /readyz on picogate's admin port. Readiness means a device request
// forwarded now would work: the API server answers, it accepts the gateway's credential (checked with a
// SelfSubjectReview, which any authenticated identity may make), and the device registry has synced.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Check is one readiness condition. It returns nil when ready; Degraded marks a problem that does not
// stop the gateway serving (it is reported but /readyz stays 200).
type Check struct {
	Name  string
	Probe func(ctx context.Context) error
}

// Degraded wraps an error that is worth reporting but does not make the gateway unready.
type Degraded struct{ Err error }

func (d Degraded) Error() string { return "degraded: " + d.Err.Error() }
func (d Degraded) Unwrap() error { return d.Err }

// Config configures a Prober.
type Config struct {
	Checks []Check
	// Interval between probes. Default 1s (so /readyz turns false within about two seconds of an outage).
	Interval time.Duration
	// Timeout for each probe. Default 2s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Prober runs the checks in the background and serves their last results, so a probe of /readyz never
// waits on the API server.
type Prober struct {
	cfg     Config
	mu      sync.RWMutex
	results map[string]error
	checked bool
}

// New builds a Prober.
func New(cfg Config) (*Prober, error) {
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if cfg.Interval < 0 || cfg.Timeout < 0 {
		errs = append(errs, errors.New("health: interval and timeout must not be negative"))
	}
	for i, c := range cfg.Checks {
		if c.Name == "" || c.Probe == nil {
			errs = append(errs, fmt.Errorf("health: check %d needs a name and a probe", i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Prober{cfg: cfg, results: map[string]error{}}, nil
}

// Run probes until ctx ends.
func (p *Prober) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		p.probe(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (p *Prober) probe(ctx context.Context) {
	results := make(map[string]error, len(p.cfg.Checks))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, c := range p.cfg.Checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
			defer cancel()
			err := c.Probe(cctx)
			mu.Lock()
			results[c.Name] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	p.mu.Lock()
	for name, err := range results {
		if (err == nil) != (p.results[name] == nil) || !p.checked {
			if err != nil {
				p.cfg.Logger.Warn("readiness check failing", "check", name, "err", err)
			} else if p.checked {
				p.cfg.Logger.Info("readiness check passing again", "check", name)
			}
		}
	}
	p.results, p.checked = results, true
	p.mu.Unlock()
}

// Ready reports whether every check passes (degraded ones count as passing).
func (p *Prober) Ready() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if !p.checked {
		return false
	}
	for _, err := range p.results {
		var d Degraded
		if err != nil && !errors.As(err, &d) {
			return false
		}
	}
	return true
}

// ServeReady answers /readyz in the API server's style: one [+]/[-] line per check when ?verbose or not
// ready, "ok" otherwise.
func (p *Prober) ServeReady(w http.ResponseWriter, r *http.Request) {
	p.mu.RLock()
	var b strings.Builder
	ready := p.checked
	if !p.checked {
		b.WriteString("[-]startup: first checks not run yet\n")
	}
	degraded := false
	for _, c := range p.cfg.Checks {
		err, ok := p.results[c.Name]
		var d Degraded
		switch {
		case !ok:
		case err == nil:
			fmt.Fprintf(&b, "[+]%s ok\n", c.Name)
		case errors.As(err, &d):
			degraded = true
			fmt.Fprintf(&b, "[~]%s %v\n", c.Name, err)
		default:
			ready = false
			fmt.Fprintf(&b, "[-]%s failed: %v\n", c.Name, err)
		}
	}
	p.mu.RUnlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, b.String(), "readyz check failed\n")
		return
	}
	if _, verbose := r.URL.Query()["verbose"]; verbose || degraded {
		fmt.Fprint(w, b.String())
		if degraded {
			fmt.Fprint(w, "degraded\n")
		} else {
			fmt.Fprint(w, "readyz check passed\n")
		}
		return
	}
	fmt.Fprint(w, "ok")
}

// ServeHealth answers /healthz: the process is up and serving.
func ServeHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, "ok")
}

// SelfReviewer is the part of a Kubernetes client a credential check needs.
type SelfReviewer interface {
	Create(ctx context.Context, r *authenticationv1.SelfSubjectReview, opts metav1.CreateOptions) (*authenticationv1.SelfSubjectReview, error)
}

// CredentialCheck asks the API server who the gateway is. It fails if the server is unreachable, refuses
// the credential, or sees the gateway as anonymous.
func CredentialCheck(r SelfReviewer) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		res, err := r.Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("API server: %w", err)
		}
		if u := res.Status.UserInfo.Username; u == "" || u == "system:anonymous" {
			return errors.New("API server does not accept the gateway's credential (anonymous)")
		}
		return nil
	}
}
