package controlplane

import (
	"context"
	"errors"
	"fmt"
)

// Up starts a control plane, calls ready with it once it serves, and keeps it running until ctx
// is done (a nil error: that is how a lab is meant to end) or one of its processes exits on its
// own (that process's error). Either way it stops everything before returning. It is the
// life of `picolab up`.
func Up(ctx context.Context, cfg Config, ready func(*ControlPlane) error) error {
	c, err := Start(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil // interrupted while starting
		}
		return err
	}
	if err := ready(c); err != nil {
		return errors.Join(err, c.Stop())
	}
	select {
	case <-ctx.Done():
		err = nil
	case err = <-c.failed:
		err = fmt.Errorf("control plane failed: %w", err)
	}
	return errors.Join(err, c.Stop())
}
