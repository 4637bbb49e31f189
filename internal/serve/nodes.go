package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/client-go/metadata"

	"github.com/picogate/picogate/internal/gateway"
	"github.com/picogate/picogate/internal/health"
	"github.com/picogate/picogate/internal/nodeowner"
	"github.com/picogate/picogate/internal/upstream"
)

// buildNodes is the gateway's view of which Nodes are devices' (a metadata-only informer with the
// gateway's credential) and the checks that use it.
func buildNodes(up *upstream.Upstream, reg gateway.Registry, log *slog.Logger) (*nodeowner.Cache, []gateway.Check, error) {
	mc, err := metadata.NewForConfig(up.REST)
	if err != nil {
		return nil, nil, fmt.Errorf("node ownership: %w", err)
	}
	nodes, err := nodeowner.New(nodeowner.Config{Client: mc, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	checks, err := gateway.OwnershipChecks(nodes, reg)
	if err != nil {
		return nil, nil, err
	}
	return nodes, checks, nil
}

// nodesCheck is ready once the Nodes are loaded (until then every device request is refused with 503);
// a watch failing since is reported as degraded, the last synced view serving.
func nodesCheck(nodes *nodeowner.Cache) func(context.Context) error {
	return func(context.Context) error {
		if !nodes.HasSynced() {
			return errors.New("nodes not loaded yet")
		}
		if at, werr := nodes.WatchError(); werr != nil {
			return health.Degraded{Err: fmt.Errorf("serving the nodes loaded before %s: %w", at.Format(time.RFC3339), werr)}
		}
		return nil
	}
}
