package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/picogate/picogate/internal/nodeowner"
	"github.com/picogate/picogate/internal/policy"
	"github.com/picogate/picogate/internal/registry"
	"github.com/picogate/picogate/internal/status"
)

// Nodes is what the ownership checks need to know about the cluster's Nodes: nodeowner.Cache.
type Nodes interface {
	HasSynced() bool
	Owner(name string) nodeowner.Ownership
	Lookup(ctx context.Context, name string) (nodeowner.Ownership, error)
}

// OwnershipChecks returns the checks (Config.Checks) that keep every forwarded request to Nodes picogate
// created for devices. Device names share the namespace of real nodes, so:
//
//   - a device whose Node exists without registry.NodeMarkerLabel is refused every request: it would act
//     as a real node (one named like it, or one that joined after it was registered);
//   - a device may create only its own Node, and post events about no other Node (the body is read as
//     the API server reads it: package policy);
//   - a request without a credential (the shared identity) may make only policy.SharedScope's requests,
//     and write only a Node that carries the marker and that no registered device owns;
//   - every Node created through the gateway gets the marker.
//
// reg may be nil (no device records).
func OwnershipChecks(nodes Nodes, reg Registry) ([]Check, error) {
	if nodes == nil {
		return nil, errors.New("node ownership checks need the cluster's Nodes")
	}
	scope, err := policy.New(policy.SharedScope())
	if err != nil {
		return nil, fmt.Errorf("the shared identity's scope: %w", err)
	}
	o := &ownership{nodes: nodes, reg: reg, scope: scope}
	return []Check{o.check}, nil
}

type ownership struct {
	nodes Nodes
	reg   Registry
	scope *policy.Policy
}

func (o *ownership) check(in *Inspection) *status.Error {
	if in.Local {
		return nil
	}
	if d := in.Identity.Device(); d != nil {
		return o.device(in, d.Name)
	}
	if in.Identity.Shared() {
		return o.shared(in)
	}
	return nil
}

// device checks a registered device's request.
func (o *ownership) device(in *Inspection, name string) *status.Error {
	if !o.nodes.HasSynced() {
		return &status.Error{Code: http.StatusServiceUnavailable, Message: "the gateway has not loaded the cluster's nodes yet", RetryAfter: retryAfterUnavailable}
	}
	if o.nodes.Owner(name).Foreign() {
		return notDeviceNode(name)
	}
	switch kind := policy.BodyCheck(in.Method, in.Path); kind {
	case policy.BodyNodeCreate:
		nc, err := policy.ParseNodeCreate(in.ContentType, in.Body)
		if err != nil {
			return bodyRefusal(err)
		}
		if nc.Name != name {
			return &status.Error{Code: http.StatusForbidden, Message: fmt.Sprintf("node %s may create only its own Node, not %s", name, nc.Name)}
		}
		return mark(in, nc)
	case policy.BodyEvent, policy.BodyEventPatch:
		if err := policy.CheckEvent(kind, in.ContentType, in.Body, name); err != nil {
			return bodyRefusal(err)
		}
	}
	return nil
}

// shared checks a request without a credential, forwarded as SharedUser.
func (o *ownership) shared(in *Inspection) *status.Error {
	if d := o.scope.Allow(policy.Request{Method: in.Method, Path: in.Path, Query: in.Query, Watch: in.Query.Watch()}); !d.Allowed() {
		return &status.Error{Code: http.StatusForbidden, Message: "without a device credential only the firmware's requests are allowed (create a Node, patch its status, read a ConfigMap): " + d.Reason}
	}
	name := policy.SharedNode(in.Path)
	var nc *policy.NodeCreate
	if policy.BodyCheck(in.Method, in.Path) == policy.BodyNodeCreate {
		var err error
		if nc, err = policy.ParseNodeCreate(in.ContentType, in.Body); err != nil {
			return bodyRefusal(err)
		}
		name = nc.Name
	}
	if name == "" {
		return nil // a ConfigMap read, the version: the API server's RBAC decides
	}
	if o.reg != nil {
		if !o.reg.HasSynced() {
			return &status.Error{Code: http.StatusServiceUnavailable, Message: "the device registry has not been loaded yet", RetryAfter: retryAfterUnavailable}
		}
		if _, ok := o.reg.ByName(name); ok {
			return &status.Error{Code: http.StatusForbidden, Message: fmt.Sprintf("node %s belongs to a registered device: only that device may write it", name)}
		}
	}
	own, err := o.nodes.Lookup(in.Context, name)
	switch {
	case err != nil:
		return &status.Error{Code: http.StatusServiceUnavailable, Message: fmt.Sprintf("cannot tell whether node %s is a device's: the API server did not answer", name), RetryAfter: retryAfterUnavailable}
	case own.Foreign():
		return notDeviceNode(name)
	case nc != nil:
		return mark(in, nc)
	case !own.Exists:
		return &status.Error{Code: http.StatusForbidden, Message: fmt.Sprintf("node %s does not exist: create it first", name)}
	}
	return nil
}

func notDeviceNode(name string) *status.Error {
	return &status.Error{Code: http.StatusForbidden, Message: fmt.Sprintf("node %s is not a picogate device node: it exists without the label %s=true", name, registry.NodeMarkerLabel)}
}

// mark forwards the Node create with the device marker set.
func mark(in *Inspection, nc *policy.NodeCreate) *status.Error {
	b, err := nc.WithLabel(registry.NodeMarkerLabel, "true")
	if err != nil {
		return &status.Error{Code: http.StatusBadRequest, Message: err.Error()}
	}
	in.ReplaceBody(b)
	return nil
}

// bodyRefusal answers a body check's error with its code.
func bodyRefusal(err error) *status.Error {
	switch {
	case errors.Is(err, policy.ErrBodyMediaType):
		return &status.Error{Code: http.StatusUnsupportedMediaType, Reason: "UnsupportedMediaType", Message: err.Error()}
	case errors.Is(err, policy.ErrBodyForbidden):
		return &status.Error{Code: http.StatusForbidden, Message: err.Error()}
	default:
		return &status.Error{Code: http.StatusBadRequest, Message: err.Error()}
	}
}
