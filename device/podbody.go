package device

import "time"

// ctrState is one of a container's states: waiting, running or terminated
// (kind 'w', 'r', 't'), or none (0).
type ctrState struct {
	kind                  byte
	reason, message       string
	startedAt, finishedAt time.Time
	exitCode              int
	containerID           string
}

// ctrStatus is a containerStatuses entry.
type ctrStatus struct {
	name, image, imageID, containerID string
	ready, started                    bool
	restarts                          int
	state, last                       ctrState
}

// podStatus is what the agent reports for a pod.
type podStatus struct {
	uid             string
	phase           string
	reason, message string // pod-level, e.g. OutOfpods
	ip              string
	startTime       time.Time
	conds           []condition // PodScheduled, Initialized, ContainersReady, Ready
	containers      []ctrStatus
}

// appendPodStatusPatch builds the strategic-merge patch for
// /api/v1/namespaces/NS/pods/NAME/status. metadata.uid makes it a
// precondition: a pod re-created under the same name is not overwritten.
func appendPodStatusPatch(b []byte, s *podStatus) []byte {
	b = append(b, `{"metadata":{`...)
	b = appendField(b, "uid", s.uid)
	b = closeObj(b, '}')
	b = append(b, `,"status":{`...)
	b = appendField(b, "phase", s.phase)
	if s.reason != "" {
		b = appendField(b, "reason", s.reason)
		b = appendField(b, "message", s.message)
	}
	if s.ip != "" {
		for _, k := range [2]string{"host", "pod"} {
			b = appendField(b, k+"IP", s.ip)
			b = appendKey(b, k+"IPs")
			b = append(b, `[{"ip":`...)
			b = appendStr(b, s.ip)
			b = append(b, "}],"...)
		}
	}
	if !s.startTime.IsZero() {
		b = appendTimeField(b, "startTime", s.startTime)
	}
	b = append(b, `"conditions":[`...)
	for i := range s.conds {
		c := &s.conds[i]
		b = append(b, '{')
		b = appendField(b, "type", c.typ)
		b = appendField(b, "status", c.status)
		b = appendTimeField(b, "lastTransitionTime", c.transition)
		if c.reason != "" {
			b = appendField(b, "reason", c.reason)
		}
		if c.message != "" {
			b = appendField(b, "message", c.message)
		}
		b = append(closeObj(b, '}'), ',')
	}
	b = append(closeObj(b, ']'), ',')
	b = append(b, `"containerStatuses":[`...)
	for i := range s.containers {
		b = appendCtrStatus(b, &s.containers[i])
		b = append(b, ',')
	}
	b = append(closeObj(b, ']'), '}', '}')
	return b
}

func appendCtrStatus(b []byte, c *ctrStatus) []byte {
	b = append(b, '{')
	b = appendField(b, "name", c.name)
	b = appendField(b, "image", c.image)
	b = appendField(b, "imageID", c.imageID)
	if c.containerID != "" {
		b = appendField(b, "containerID", c.containerID)
	}
	b = appendBoolField(b, "ready", c.ready)
	b = appendBoolField(b, "started", c.started)
	b = appendIntField(b, "restartCount", int64(c.restarts))
	b = appendKey(b, "state")
	b = appendCtrState(b, &c.state)
	b = append(b, ',')
	b = appendKey(b, "lastState")
	b = appendCtrState(b, &c.last)
	return append(b, '}')
}

func appendCtrState(b []byte, s *ctrState) []byte {
	switch s.kind {
	case 'w':
		b = append(b, `{"waiting":{`...)
		b = appendField(b, "reason", s.reason)
		if s.message != "" {
			b = appendField(b, "message", s.message)
		}
	case 'r':
		b = append(b, `{"running":{`...)
		b = appendTimeField(b, "startedAt", s.startedAt)
	case 't':
		b = append(b, `{"terminated":{`...)
		b = appendIntField(b, "exitCode", int64(s.exitCode))
		b = appendField(b, "reason", s.reason)
		if s.message != "" {
			b = appendField(b, "message", s.message)
		}
		if !s.startedAt.IsZero() {
			b = appendTimeField(b, "startedAt", s.startedAt)
		}
		b = appendTimeField(b, "finishedAt", s.finishedAt)
		if s.containerID != "" {
			b = appendField(b, "containerID", s.containerID)
		}
	default:
		return append(b, "{}"...)
	}
	return append(closeObj(b, '}'), '}')
}

// appendDeleteOptions builds the body that completes a pod's deletion once
// its containers stopped, as a kubelet does: no further grace, and only if
// it is still the same pod.
func appendDeleteOptions(b []byte, uid string) []byte {
	b = append(b, `{"apiVersion":"v1","kind":"DeleteOptions","gracePeriodSeconds":0,"preconditions":{"uid":`...)
	b = appendStr(b, uid)
	return append(b, "}}"...)
}
