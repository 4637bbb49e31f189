package device

import (
	"strconv"
	"time"
)

// Label and taint keys a picogate device registers with.
const (
	BoardLabel = "picogate.io/board"
	MCUTaint   = "picogate.io/mcu"
)

// nodeSpec is the part of the Node that follows from Config and never
// changes while the agent runs.
type nodeSpec struct {
	name, board, instanceType string
	cpu, memory               string
	pods                      int
	version, bootID           string
}

// condition is one node condition as the agent keeps it.
type condition struct {
	typ, status, reason, message string
	transition                   time.Time
}

// nodeStatus is the changing part of the Node.
type nodeStatus struct {
	ip    string
	conds [4]condition // Ready, MemoryPressure, DiskPressure, PIDPressure
}

// appendNodeCreate builds the POST /api/v1/nodes body. Nodes may set their
// status on create, so the first request already carries capacity and
// conditions, and the node is schedulable after a single round trip.
func appendNodeCreate(b []byte, n *nodeSpec, st *nodeStatus, now time.Time) []byte {
	b = append(b, `{"apiVersion":"v1","kind":"Node","metadata":{`...)
	b = appendField(b, "name", n.name)
	b = appendLabels(b, n)
	b = append(b, `},"spec":{"taints":[{"key":"`+MCUTaint+`","value":"true","effect":"NoSchedule"}]},"status":{`...)
	b = appendNodeStatusFields(b, n, st, now, true)
	return append(b, "}}"...)
}

// appendNodeLabelsPatch builds the strategic-merge patch sent to an existing
// Node (after a 409). It carries labels only: NodeRestriction forbids a node
// to change its own taints, and the status goes to the status subresource.
func appendNodeLabelsPatch(b []byte, n *nodeSpec) []byte {
	b = append(b, `{"metadata":{`...)
	b = appendLabels(b, n)
	return append(b, "}}"...)
}

// appendNodeStatusPatch builds the strategic-merge patch for
// /api/v1/nodes/NAME/status: conditions (merged by type) and addresses each
// time, capacity and nodeInfo when full is set (after registration).
func appendNodeStatusPatch(b []byte, n *nodeSpec, st *nodeStatus, now time.Time, full bool) []byte {
	b = append(b, `{"status":{`...)
	b = appendNodeStatusFields(b, n, st, now, full)
	return append(b, "}}"...)
}

func appendLabels(b []byte, n *nodeSpec) []byte {
	b = append(b, `"labels":{`...)
	b = appendField(b, "kubernetes.io/arch", "arm")
	b = appendField(b, "kubernetes.io/os", "linux")
	b = appendField(b, "kubernetes.io/hostname", n.name)
	b = appendField(b, "node.kubernetes.io/instance-type", n.instanceType)
	b = appendField(b, BoardLabel, n.board)
	return closeObj(b, '}')
}

func appendNodeStatusFields(b []byte, n *nodeSpec, st *nodeStatus, now time.Time, full bool) []byte {
	if full {
		for _, k := range []string{"capacity", "allocatable"} {
			b = appendKey(b, k)
			b = append(b, '{')
			b = appendField(b, "cpu", n.cpu)
			b = appendField(b, "memory", n.memory)
			b = appendField(b, "pods", strconv.Itoa(n.pods))
			b = closeObj(b, '}')
			b = append(b, ',')
		}
	}
	b = append(b, `"conditions":[`...)
	for i := range st.conds {
		c := &st.conds[i]
		b = append(b, '{')
		b = appendField(b, "type", c.typ)
		b = appendField(b, "status", c.status)
		b = appendTimeField(b, "lastHeartbeatTime", now)
		b = appendTimeField(b, "lastTransitionTime", c.transition)
		b = appendField(b, "reason", c.reason)
		b = appendField(b, "message", c.message)
		b = closeObj(b, '}')
		b = append(b, ',')
	}
	b = closeObj(b, ']')
	b = append(b, `,"addresses":[`...)
	if st.ip != "" {
		b = append(b, `{"type":"InternalIP","address":`...)
		b = appendStr(b, st.ip)
		b = append(b, "},"...)
	}
	b = append(b, `{"type":"Hostname","address":`...)
	b = appendStr(b, n.name)
	b = append(b, "}]"...)
	if full {
		b = append(b, `,"nodeInfo":{`...)
		b = appendField(b, "bootID", n.bootID)
		b = appendField(b, "osImage", "picogate device ("+n.board+")")
		b = appendField(b, "containerRuntimeVersion", "picogate://"+n.version)
		b = appendField(b, "kubeletVersion", n.version)
		b = appendField(b, "operatingSystem", "linux")
		b = appendField(b, "architecture", "arm")
		b = closeObj(b, '}')
	}
	return b
}

// newConditions is the state at start: Ready (as Health says) and no
// pressure. Transition times start at now and are replaced by the Node's own
// when its condition already had the same status (see adoptTransitions).
func newConditions(now time.Time) [4]condition {
	return [4]condition{
		{"Ready", "True", "KubeletReady", "picogate device agent is posting ready status", now},
		{"MemoryPressure", "False", "KubeletHasSufficientMemory", "device has sufficient memory available", now},
		{"DiskPressure", "False", "KubeletHasNoDiskPressure", "device has no disk pressure", now},
		{"PIDPressure", "False", "KubeletHasSufficientPID", "device has sufficient PID available", now},
	}
}

// setReady updates the Ready condition from a health result and reports
// whether its status changed (which is when lastTransitionTime moves).
func (st *nodeStatus) setReady(healthErr error, now time.Time) bool {
	c := &st.conds[0]
	status, reason, msg := "True", "KubeletReady", "picogate device agent is posting ready status"
	if healthErr != nil {
		status, reason, msg = "False", "KubeletNotReady", healthErr.Error()
	}
	changed := c.status != status
	if changed {
		c.transition = now
	}
	changed = changed || c.message != msg
	c.status, c.reason, c.message = status, reason, msg
	return changed
}

// adoptTransitions takes lastTransitionTime from the Node the API server
// returned, for each condition whose status is unchanged: a device that
// restarts quickly has been Ready all along, and saying otherwise would be
// false.
func (st *nodeStatus) adoptTransitions(node jval) {
	node.get("status", "conditions").each(func(_, c jval) bool {
		typ := c.get("type").strOr("")
		for i := range st.conds {
			own := &st.conds[i]
			if own.typ != typ || !c.get("status").equal(own.status) {
				continue
			}
			if t, err := time.Parse(time.RFC3339, c.get("lastTransitionTime").strOr("")); err == nil {
				own.transition = t
			}
		}
		return true
	})
}
