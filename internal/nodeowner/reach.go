package nodeowner

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/picogate/picogate/internal/firstlist"
)

// waitListable lists one Node until that succeeds, so a missing "list nodes" permission (an old
// deploy/rbac.yaml) is one clear line in the log instead of client-go's silent retries (see package
// firstlist). It returns false if ctx ends first.
func (c *Cache) waitListable(ctx context.Context) bool {
	return firstlist.Wait(ctx, firstlist.Config{
		List: func(ctx context.Context) error {
			_, err := c.cfg.Client.Resource(nodesResource()).List(ctx, metav1.ListOptions{Limit: 1})
			return err
		},
		Logger:    c.log,
		Failing:   "node ownership: cannot list nodes (the gateway's credential needs get, list and watch on nodes: deploy/rbac.yaml); retrying",
		Recovered: "node ownership: the API server answers; loading the nodes",
	})
}
