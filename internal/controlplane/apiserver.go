package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// StopAPIServer kills only kube-apiserver, for outage tests; etcd and the data stay.
func (c *ControlPlane) StopAPIServer() error {
	c.mu.Lock()
	p := c.procs[APIServer]
	delete(c.procs, APIServer)
	c.mu.Unlock()
	if p == nil {
		return errors.New("stopping kube-apiserver: not running")
	}
	p.stop()
	c.log.Info("stopped", "component", APIServer)
	return nil
}

// StartAPIServer starts kube-apiserver again, on the same port with the same flags, and waits
// for /readyz. ctx bounds only the wait: the process lives until StopAPIServer, Stop or the end
// of Start's ctx.
func (c *ControlPlane) StartAPIServer(ctx context.Context) error {
	// The port was ours a moment ago; should a port probe hold it briefly, try once more.
	pause := func() error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
			return nil
		}
	}
	if err := c.launch(ctx, APIServer, c.apiServerArgs, c.apiServerReady, pause); err != nil {
		return fmt.Errorf("restarting kube-apiserver on port %d: %w", c.apiPort, err)
	}
	return nil
}
