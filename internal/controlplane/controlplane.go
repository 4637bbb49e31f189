package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// ControlPlane is a running local control plane. Its methods are safe for concurrent use.
type ControlPlane struct {
	cfg     Config
	dir     string
	ownsDir bool
	log     *slog.Logger
	pki     *pki
	health  *http.Client

	// lifetime bounds every process: Start's ctx, cancelled by Stop.
	lifetime context.Context
	cancel   context.CancelFunc
	failed   chan error // exits of healthy processes that nobody asked for

	etcdPort, etcdPeerPort, apiPort      int
	schedulerPort, controllerManagerPort int
	adminKubeconfig                      string

	mu      sync.Mutex
	procs   map[string]*process
	stopped bool

	stopOnce sync.Once
	stopErr  error
}

// Start starts etcd and kube-apiserver (and kube-scheduler and kube-controller-manager if cfg
// asks) and returns once the API server's /readyz says ok and the others' /healthz do. ctx
// bounds the life of the whole control plane, not only its start: when it is cancelled every
// process is killed. Config.StartTimeout bounds the start of each process.
func Start(ctx context.Context, cfg Config) (*ControlPlane, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("starting control plane: %w", err)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("starting control plane: %w", err)
	}
	began := time.Now()
	c, err := prepare(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("starting control plane: %w", err)
	}
	if err := c.boot(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("starting control plane: %w", err), c.Stop())
	}
	c.log.Info("control plane ready", "url", c.URL(), "dir", c.dir, "took", time.Since(began).Round(time.Millisecond))
	return c, nil
}

// prepare makes the working folder, the PKI and the port choices.
func prepare(ctx context.Context, cfg Config) (c *ControlPlane, err error) {
	c = &ControlPlane{cfg: cfg, log: cfg.Logger, procs: map[string]*process{}, failed: make(chan error, 4)}
	c.lifetime, c.cancel = context.WithCancel(ctx)
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop())
		}
	}()
	if cfg.Dir == "" {
		if c.dir, err = os.MkdirTemp("", "picogate-controlplane-"); err != nil {
			return c, fmt.Errorf("creating working folder: %w", err)
		}
		c.ownsDir = true
	} else {
		if c.dir, err = filepath.Abs(cfg.Dir); err != nil {
			return c, fmt.Errorf("working folder %q: %w", cfg.Dir, err)
		}
		if err = os.MkdirAll(c.dir, 0o755); err != nil {
			return c, fmt.Errorf("creating working folder: %w", err)
		}
	}
	if err = os.MkdirAll(filepath.Join(c.dir, "logs"), 0o755); err != nil {
		return c, fmt.Errorf("creating log folder: %w", err)
	}
	if c.pki, err = newPKI(filepath.Join(c.dir, "pki")); err != nil {
		return c, err
	}
	if c.health, err = newHealthClient(c.pki); err != nil {
		return c, fmt.Errorf("loading the health checker's credentials: %w", err)
	}
	if err = c.pickPorts(); err != nil {
		return c, err
	}
	c.adminKubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	return c, nil
}

func (c *ControlPlane) pickPorts() error {
	ports, err := freePorts(5)
	if err != nil {
		return err
	}
	c.etcdPort, c.etcdPeerPort, c.apiPort = ports[0], ports[1], ports[2]
	c.schedulerPort, c.controllerManagerPort = ports[3], ports[4]
	return nil
}

// boot starts the processes in dependency order; the scheduler and the controller manager only
// need the API server, so they start side by side.
func (c *ControlPlane) boot(ctx context.Context) error {
	if err := c.launch(ctx, Etcd, c.etcdArgs, c.etcdHealthy, c.repickEtcd); err != nil {
		return err
	}
	if err := c.launch(ctx, APIServer, c.apiServerArgs, c.apiServerReady, c.repickAPIServer); err != nil {
		return err
	}
	// Written only now, when the API server's port is final.
	if err := c.WriteKubeconfig(c.adminKubeconfig, c.pki.adminCert, c.pki.adminKey); err != nil {
		return err
	}
	var wg sync.WaitGroup
	var schedErr, cmErr error
	if c.cfg.Scheduler {
		wg.Go(func() {
			schedErr = c.launch(ctx, Scheduler, c.schedulerArgs,
				c.componentHealthy(&c.schedulerPort), c.repickPort(&c.schedulerPort))
		})
	}
	if c.cfg.ControllerManager {
		wg.Go(func() {
			cmErr = c.launch(ctx, ControllerManager, c.controllerManagerArgs,
				c.componentHealthy(&c.controllerManagerPort), c.repickPort(&c.controllerManagerPort))
			if cmErr == nil {
				cmErr = c.waitDefaultServiceAccount(ctx)
			}
		})
	}
	wg.Wait()
	return errors.Join(schedErr, cmErr)
}

// Stop kills every process (process group and all), waits for them, and removes the working
// folder if Start created it. It may be called more than once.
func (c *ControlPlane) Stop() error {
	c.stopOnce.Do(func() {
		c.mu.Lock()
		c.stopped = true
		procs := c.procs
		c.procs = map[string]*process{}
		c.mu.Unlock()
		for _, name := range []string{ControllerManager, Scheduler, APIServer, Etcd} {
			if p := procs[name]; p != nil {
				p.stop()
			}
		}
		c.cancel()
		if c.ownsDir {
			if err := os.RemoveAll(c.dir); err != nil {
				c.stopErr = fmt.Errorf("removing working folder: %w", err)
			}
		}
		c.log.Info("control plane stopped", "dir", c.dir, "removed", c.ownsDir)
	})
	return c.stopErr
}
