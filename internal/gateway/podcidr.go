package gateway

import (
	"context"
	"net/http"

	"github.com/picogate/picogate/internal/policy"
	"github.com/picogate/picogate/internal/registry"
	"github.com/picogate/picogate/internal/status"
)

// PodCIDRCheck returns the check (Config.Checks, after OwnershipChecks) that sets spec.podCIDR and
// spec.podCIDRs of every Node created through the gateway, by a device or the shared identity, to
// what podCIDRs returns (podcidr.Reserver): the one block all device Nodes share, so boards leave the
// cluster's pod CIDRs to real nodes, or none. What the sender gave is never kept: a pod CIDR outside
// the cluster CIDR stops kube-controller-manager at its every start.
func PodCIDRCheck(podCIDRs func(context.Context) []string) Check {
	return func(in *Inspection) *status.Error {
		if in.Local || policy.BodyCheck(in.Method, in.Path) != policy.BodyNodeCreate {
			return nil
		}
		if in.Identity.Device() == nil && !in.Identity.Shared() {
			return nil
		}
		nc, err := policy.ParseNodeCreate(in.ContentType, in.Body)
		if err == nil {
			err = nc.SetPodCIDRs(podCIDRs(in.Context))
		}
		var b []byte
		if err == nil {
			// Encoding goes through WithLabel; the marker is set already (OwnershipChecks) and stays.
			b, err = nc.WithLabel(registry.NodeMarkerLabel, "true")
		}
		if err != nil {
			return &status.Error{Code: http.StatusBadRequest, Message: err.Error()}
		}
		in.ReplaceBody(b)
		return nil
	}
}
