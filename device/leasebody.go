package device

import "time"

// leaseNamespace is where node heartbeats live.
const leaseNamespace = "kube-node-lease"

// appendLeaseCreate builds the POST body of the node's Lease. The owner
// reference to the Node makes the garbage collector remove the Lease with
// the Node, as a kubelet's does.
func appendLeaseCreate(b []byte, name, nodeUID string, duration time.Duration, now time.Time) []byte {
	b = append(b, `{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{`...)
	b = appendField(b, "name", name)
	b = appendField(b, "namespace", leaseNamespace)
	b = appendOwner(b, name, nodeUID)
	b = closeObj(b, '}')
	b = append(b, ',')
	b = appendLeaseSpec(b, name, duration, now)
	return append(b, '}')
}

// appendLeasePatch builds the merge patch that renews the Lease. withOwner
// is set on the first renewal after (re)registration, when the Lease may be
// left over from an earlier Node of the same name.
func appendLeasePatch(b []byte, name, nodeUID string, duration time.Duration, now time.Time, withOwner bool) []byte {
	b = append(b, '{')
	if withOwner {
		b = append(b, `"metadata":{`...)
		b = appendOwner(b, name, nodeUID)
		b = closeObj(b, '}')
		b = append(b, ',')
	}
	b = appendLeaseSpec(b, name, duration, now)
	return append(b, '}')
}

func appendOwner(b []byte, name, uid string) []byte {
	if uid == "" {
		return b
	}
	b = append(b, `"ownerReferences":[{"apiVersion":"v1","kind":"Node",`...)
	b = appendField(b, "name", name)
	b = appendField(b, "uid", uid)
	return append(closeObj(b, '}'), "],"...)
}

func appendLeaseSpec(b []byte, name string, duration time.Duration, now time.Time) []byte {
	b = append(b, `"spec":{`...)
	b = appendField(b, "holderIdentity", name)
	b = appendIntField(b, "leaseDurationSeconds", int64(duration/time.Second))
	b = appendMicroTimeField(b, "renewTime", now)
	return closeObj(b, '}')
}
