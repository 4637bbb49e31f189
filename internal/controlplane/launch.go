package controlplane

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"
)

// launch starts one process and waits until check passes. When the process died because its
// port was taken meanwhile, repick (if not nil) chooses again and it is tried once more.
func (c *ControlPlane) launch(ctx context.Context, name string, args func() []string, check func(context.Context) error, repick func() error) error {
	for attempt := 0; ; attempt++ {
		began := time.Now()
		p, err := c.spawn(name, args())
		if err != nil {
			return err
		}
		err = p.waitHealthy(ctx, c.cfg.StartTimeout, check)
		if err == nil {
			p.healthy.Store(true)
			c.log.Info("started", "component", name, "pid", p.cmd.Process.Pid, "took", time.Since(began).Round(time.Millisecond))
			return nil
		}
		p.stop()
		c.forget(name, p)
		if attempt > 0 || repick == nil || !errors.Is(err, errAddrInUse) {
			return err
		}
		c.log.Warn("port taken before the process bound it; retrying", "component", name)
		if err := repick(); err != nil {
			return err
		}
	}
}

// spawn starts one process and records it, unless the control plane is stopping or that
// process is already running.
func (c *ControlPlane) spawn(name string, args []string) (*process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil, fmt.Errorf("starting %s: control plane is stopped", name)
	}
	if old := c.procs[name]; old != nil {
		if exited, _ := old.exited(); !exited {
			return nil, fmt.Errorf("starting %s: already running (pid %d)", name, old.cmd.Process.Pid)
		}
	}
	p, err := startProcess(c.lifetime, c.dir, name, filepath.Join(c.cfg.BinDir, name), args, c.LogFile(name), c.onExit)
	if err != nil {
		return nil, err
	}
	c.procs[name] = p
	return p, nil
}

// forget drops p from the running set, if it is still the one recorded under name.
func (c *ControlPlane) forget(name string, p *process) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.procs[name] == p {
		delete(c.procs, name)
	}
}

// onExit reports a healthy process that died without being asked to.
func (c *ControlPlane) onExit(p *process) {
	if p.killed.Load() || !p.healthy.Load() || c.lifetime.Err() != nil {
		return
	}
	err := fmt.Errorf("%s exited unexpectedly (%v); end of %s:\n%s", p.name, p.err, p.logPath, tailFile(p.logPath, tailLines))
	c.log.Error("control plane process exited", "component", p.name, "err", p.err)
	select {
	case c.failed <- err:
	default:
	}
}

func (c *ControlPlane) repickEtcd() error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	c.etcdPort, c.etcdPeerPort = ports[0], ports[1]
	return nil
}

func (c *ControlPlane) repickAPIServer() error { return c.repickPort(&c.apiPort)() }

// repickPort returns a function that moves *port to a new free port.
func (c *ControlPlane) repickPort(port *int) func() error {
	return func() error {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		*port = ports[0]
		return nil
	}
}

func (c *ControlPlane) etcdHealthy(ctx context.Context) error {
	return etcdHealthy(ctx, c.health, c.EtcdURL()+"/health")
}

func (c *ControlPlane) apiServerReady(ctx context.Context) error {
	return getOK(ctx, c.health, c.URL()+"/readyz")
}

// componentHealthy checks kube-scheduler's or kube-controller-manager's /healthz on *port.
func (c *ControlPlane) componentHealthy(port *int) func(context.Context) error {
	return func(ctx context.Context) error {
		return getOK(ctx, c.health, "https://127.0.0.1:"+strconv.Itoa(*port)+"/healthz")
	}
}
