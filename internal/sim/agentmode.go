package sim

import (
	"context"
	"fmt"
	"time"

	"github.com/picogate/picogate/device"
)

// agentDevice is a device run by the real device package.
type agentDevice struct {
	a           *device.Agent
	configEvery time.Duration // 0: the agent reads no ConfigMap
}

func newAgent(cfg Config, c Credential) (*agentDevice, error) {
	src, err := c.sourceIP()
	if err != nil {
		return nil, fmt.Errorf("device %q: %w", c.Name, err)
	}
	key, err := c.key()
	if err != nil {
		return nil, fmt.Errorf("device %q: %w", c.Name, err)
	}
	dc := device.Config{
		Key:     key,
		Name:    c.Name,
		Gateway: cfg.Gateway,
		Token:   c.Token,
		Apps:    cfg.Apps,
		Dial:    dialer(src, 10*time.Second),
		TLS:     deviceTLS(cfg.TLS, ""),
		Logger:  cfg.Logger,
	}
	if src.IsValid() {
		dc.InternalIP = src.String()
	}
	if !cfg.Jitter {
		dc.Jitter = -1
	}
	if cfg.Tune != nil {
		cfg.Tune(&dc)
	}
	a, err := device.New(dc)
	if err != nil {
		return nil, fmt.Errorf("device %q: %w", c.Name, err)
	}
	return &agentDevice{a: a, configEvery: cfg.AgentConfigInterval}, nil
}

// Run runs the agent and, with AgentConfigInterval, reads the fleet's
// ConfigMap that often (If-None-Match; failures are counted by the agent).
func (d *agentDevice) Run(ctx context.Context) error {
	if d.configEvery > 0 {
		go func() {
			t := time.NewTicker(d.configEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					_, _ = d.a.ConfigMap(ctx, "default", "pico-config")
				}
			}
		}()
	}
	return d.a.Run(ctx)
}

func (d *agentDevice) Snapshot() DeviceReport {
	s := d.a.Status()
	return DeviceReport{
		Name: s.Name, Ready: s.Ready, Requests: s.Requests, Errors: s.Errors,
		LastError: s.LastError, LastErrorAt: s.LastErrorAt,
		LeaseRenewals: s.LeaseRenewals, LeaseLate: s.LeaseLate, StatusPatches: s.StatusPatches,
		Pods: s.Pods, Containers: s.Containers,
	}
}
