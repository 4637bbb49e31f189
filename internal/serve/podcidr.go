package serve

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/picogate/picogate/internal/podcidr"
	"github.com/picogate/picogate/internal/registry"
)

// buildPodCIDRs returns what device Nodes are created with as their pod CIDRs (see package podcidr),
// decided from the Nodes that are not devices', which the gateway's credential lists: few, however
// large the fleet.
func buildPodCIDRs(s podcidr.Settings, cs kubernetes.Interface, log *slog.Logger) (func(context.Context) []string, error) {
	r, err := podcidr.New(podcidr.Config{Settings: s, RealNodes: realNodes(cs), Logger: log.With("component", "pod-cidr")})
	if err != nil {
		return nil, fmt.Errorf("device pod CIDRs: %w", err)
	}
	return func(ctx context.Context) []string { return r.Decide(ctx).Strings() }, nil
}

// realNodes lists every Node without the device marker, page by page.
func realNodes(cs kubernetes.Interface) podcidr.NodeLister {
	return func(ctx context.Context) ([]corev1.Node, error) {
		opts := metav1.ListOptions{LabelSelector: registry.NodeMarkerLabel + "!=true", Limit: 500}
		var out []corev1.Node
		for {
			list, err := cs.CoreV1().Nodes().List(ctx, opts)
			if err != nil {
				return nil, err
			}
			out = append(out, list.Items...)
			if list.Continue == "" {
				return out, nil
			}
			opts.Continue = list.Continue
		}
	}
}
