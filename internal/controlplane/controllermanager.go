package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// StopControllerManager kills only kube-controller-manager, for tests of what it does at its next
// start (the range allocator, for one, reads every Node's pod CIDRs then and exits on a bad one).
func (c *ControlPlane) StopControllerManager() error {
	c.mu.Lock()
	p := c.procs[ControllerManager]
	delete(c.procs, ControllerManager)
	c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("stopping %s: not running", ControllerManager)
	}
	p.stop()
	c.log.Info("stopped", "component", ControllerManager)
	return nil
}

// StartControllerManager starts kube-controller-manager again, on the same port with the same flags,
// and waits for its /healthz. ctx bounds only the wait. A healthy /healthz does not prove the
// controllers started: one that fails to initialize makes the process exit a moment later, which
// Running then reports.
func (c *ControlPlane) StartControllerManager(ctx context.Context) error {
	if !c.cfg.ControllerManager {
		return fmt.Errorf("starting %s: the control plane was started without it", ControllerManager)
	}
	// The port was ours a moment ago; should a port probe hold it briefly, try once more.
	pause := func() error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
			return nil
		}
	}
	if err := c.launch(ctx, ControllerManager, c.controllerManagerArgs,
		c.componentHealthy(&c.controllerManagerPort), pause); err != nil {
		return fmt.Errorf("restarting %s on port %d: %w", ControllerManager, c.controllerManagerPort, err)
	}
	return nil
}

// Running reports whether component (Etcd, APIServer, Scheduler, ControllerManager) is running
// now; when it is not, err says how it ended, or that it was never started or has been stopped.
func (c *ControlPlane) Running(component string) (running bool, err error) {
	c.mu.Lock()
	p := c.procs[component]
	c.mu.Unlock()
	if p == nil {
		return false, fmt.Errorf("%s: not started, or stopped", component)
	}
	if exited, exitErr := p.exited(); exited {
		if exitErr == nil {
			exitErr = errors.New("exit status 0")
		}
		return false, fmt.Errorf("%s exited (%w); end of %s:\n%s", component, exitErr, p.logPath, tailFile(p.logPath, tailLines))
	}
	return true, nil
}
