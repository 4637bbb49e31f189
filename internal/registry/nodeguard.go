package registry

import (
	"context"
	"errors"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// NodeLeaseNamespace holds every node's Lease.
const NodeLeaseNamespace = "kube-node-lease"

// ErrNotDeviceNode is returned for a device name whose Node exists without NodeMarkerLabel: a real node
// (or one made by someone else), which no device may be given or delete.
var ErrNotDeviceNode = errors.New("a Node by this name exists that picogate did not create for a device (no label " + NodeMarkerLabel + "=true)")

// NodeGetter reads Nodes: a typed client's CoreV1().Nodes().
type NodeGetter interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Node, error)
}

// CheckNodeName reports whether name may be a device's: nil if no Node has the name or its Node carries
// the device marker, ErrNotDeviceNode if a Node without the marker has it, or the error of the read.
// Device names share the namespace of real nodes, so every way a name becomes a device's checks it.
func CheckNodeName(ctx context.Context, nodes NodeGetter, name string) error {
	n, err := nodes.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("checking that no real node is named %q: %w", name, err)
	case !IsDeviceNode(n.Labels):
		return fmt.Errorf("node %q: %w", name, ErrNotDeviceNode)
	}
	return nil
}

// NodeOutcome is what DeleteDeviceNode did with a device's Node.
type NodeOutcome int

const (
	// NodeAbsent: there was no Node by the name (its Lease, if it was nobody else's, is deleted).
	NodeAbsent NodeOutcome = iota
	// NodeDeleted: the device's Node, marked as picogate's, and its Lease are deleted.
	NodeDeleted
	// NodeNotDevice: a Node without the device marker has the name; it and its Lease were left alone.
	NodeNotDevice
)

// Describe says in a few words what happened to device name's Node, for the answer and the CLI.
func (o NodeOutcome) Describe(name string) string {
	switch o {
	case NodeDeleted:
		return fmt.Sprintf("node %q and its lease deleted", name)
	case NodeNotDevice:
		return fmt.Sprintf("node %q left alone: it is not a picogate device's Node (no label %s=true)", name, NodeMarkerLabel)
	default:
		return fmt.Sprintf("no node %q to delete", name)
	}
}

// DeleteDeviceNode deletes device name's Node and Lease, but only a Node that carries NodeMarkerLabel:
// a Node without it belongs to someone else (a real node that joined under the name) and is left alone,
// with its Lease. The Node is read with read and deleted with write, with a precondition on the UID and
// resourceVersion just read, so a Node replaced or relabelled in between is never deleted (a conflict
// reads it again and decides again). The Lease is deleted only when the Node is the device's or absent,
// and only if no other Node owns it (a kubelet's Lease names its Node as owner), with the same
// precondition. write may be the device itself (the gateway impersonates it, so the API server confines
// the deletion to that one node): it reads the Lease, which a node may read for its own name.
func DeleteDeviceNode(ctx context.Context, read NodeGetter, write kubernetes.Interface, name string) (NodeOutcome, error) {
	var out NodeOutcome
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := read.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			node, out = nil, NodeAbsent
		case err != nil:
			return fmt.Errorf("reading node %q: %w", name, err)
		case !IsDeviceNode(node.Labels):
			out = NodeNotDevice
			return nil
		default:
			out = NodeDeleted
		}
		var owner types.UID
		if node != nil {
			owner = node.UID
		}
		if err := deleteLease(ctx, write, name, owner); err != nil {
			return err
		}
		if node == nil {
			return nil
		}
		uid, rv := node.UID, node.ResourceVersion
		err = write.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		if err != nil && !apierrors.IsNotFound(err) {
			if apierrors.IsConflict(err) {
				return err // changed since it was read: read it again
			}
			return fmt.Errorf("deleting node %q: %w", name, err)
		}
		return nil
	})
	if apierrors.IsConflict(err) {
		return out, fmt.Errorf("deleting node %q: it kept changing while being deleted; retry", name)
	}
	return out, err
}

// deleteLease deletes name's Lease if no Node but owner (the device's Node's UID, or none when the
// device has no Node) owns it, with a precondition on what was read.
func deleteLease(ctx context.Context, c kubernetes.Interface, name string, owner types.UID) error {
	leases := c.CoordinationV1().Leases(NodeLeaseNamespace)
	l, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading lease %q: %w", name, err)
	}
	if ownedByOtherNode(l, owner) {
		return nil
	}
	uid, rv := l.UID, l.ResourceVersion
	err = leases.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
	switch {
	case err == nil, apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		return err
	}
	return fmt.Errorf("deleting lease %q: %w", name, err)
}

// ownedByOtherNode reports whether an owner reference of l names a Node other than the one with uid.
func ownedByOtherNode(l *coordinationv1.Lease, uid types.UID) bool {
	for _, ref := range l.OwnerReferences {
		if ref.Kind == "Node" && ref.APIVersion == "v1" && (uid == "" || ref.UID != uid) {
			return true
		}
	}
	return false
}
