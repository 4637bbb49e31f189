package heartbeat

import (
	"strconv"
	"time"
)

// leasePatch is the merge patch that renews the Lease; with ownerUID it also sets the Lease's owner to
// the Node, replacing whatever owner a Lease left from an earlier Node of the same name had.
func leasePatch(name, ownerUID string, duration time.Duration, now time.Time) []byte {
	b := make([]byte, 0, 320)
	b = append(b, '{')
	if ownerUID != "" {
		b = append(b, `"metadata":{`...)
		b = appendOwner(b, name, ownerUID)
		b = append(b, "},"...)
	}
	b = appendLeaseSpec(b, name, duration, now)
	return append(b, '}')
}

// leaseCreate is the Lease a missing one is created as: owned by the Node, so the garbage collector
// removes it with the Node, as a kubelet's.
func leaseCreate(name, ownerUID string, duration time.Duration, now time.Time) []byte {
	b := make([]byte, 0, 400)
	b = append(b, `{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":`...)
	b = appendString(b, name)
	b = append(b, `,"namespace":"`+LeaseNamespace+`"`...)
	if ownerUID != "" {
		b = append(b, ',')
		b = appendOwner(b, name, ownerUID)
	}
	b = append(b, "},"...)
	b = appendLeaseSpec(b, name, duration, now)
	return append(b, '}')
}

func appendOwner(b []byte, name, uid string) []byte {
	b = append(b, `"ownerReferences":[{"apiVersion":"v1","kind":"Node","name":`...)
	b = appendString(b, name)
	b = append(b, `,"uid":`...)
	b = appendString(b, uid)
	return append(b, "}]"...)
}

func appendLeaseSpec(b []byte, name string, duration time.Duration, now time.Time) []byte {
	b = append(b, `"spec":{"holderIdentity":`...)
	b = appendString(b, name)
	b = append(b, `,"leaseDurationSeconds":`...)
	b = strconv.AppendInt(b, int64(duration/time.Second), 10)
	b = append(b, `,"renewTime":"`...)
	b = now.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00") // metav1.MicroTime
	return append(b, `"}`...)
}
