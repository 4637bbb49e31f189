package device

import (
	"errors"
	"fmt"
	"time"
)

// pod is what the agent reads of a Pod: enough to run it and report on it.
type pod struct {
	namespace, name, uid, rv string
	nodeName                 string
	deleting                 bool
	grace                    int64 // metadata.deletionGracePeriodSeconds; -1 when absent
	restartPolicy            string
	phase                    string
	startTime                time.Time // status.startTime, if already set
	scheduledAt              time.Time // PodScheduled's lastTransitionTime, if set
	containers               []containerSpec
	gone                     bool // a DELETED event: the object no longer exists
}

type containerSpec struct {
	name, image string
	args        []string
	env         []EnvVar
	restarts    int // restartCount already reported, for a device that rebooted
}

func (p *pod) key() string { return p.namespace + "/" + p.name }

// terminal reports whether the pod reached a phase it never leaves.
func (p *pod) terminal() bool { return p.phase == "Succeeded" || p.phase == "Failed" }

var errNotPod = errors.New("not a pod")

// parsePod reads a Pod object (a list item or a watch event's object).
func parsePod(v jval) (*pod, error) {
	md := v.get("metadata")
	p := &pod{
		namespace:     md.get("namespace").strOr(""),
		name:          md.get("name").strOr(""),
		uid:           md.get("uid").strOr(""),
		rv:            md.get("resourceVersion").strOr(""),
		deleting:      md.get("deletionTimestamp").kind() == '"',
		grace:         -1,
		nodeName:      v.get("spec", "nodeName").strOr(""),
		restartPolicy: v.get("spec", "restartPolicy").strOr("Always"),
		phase:         v.get("status", "phase").strOr("Pending"),
	}
	if p.name == "" || p.namespace == "" || p.uid == "" {
		return nil, fmt.Errorf("%w: metadata lacks name, namespace or uid", errNotPod)
	}
	if g, ok := md.get("deletionGracePeriodSeconds").int(); ok {
		p.grace = g
	}
	p.startTime = parseTime(v.get("status", "startTime"))
	v.get("status", "conditions").each(func(_, c jval) bool {
		if c.get("type").equal("PodScheduled") {
			p.scheduledAt = parseTime(c.get("lastTransitionTime"))
		}
		return true
	})
	v.get("spec", "containers").each(func(_, c jval) bool {
		cs := containerSpec{
			name:  c.get("name").strOr(""),
			image: c.get("image").strOr(""),
		}
		c.get("args").each(func(_, a jval) bool {
			cs.args = append(cs.args, a.strOr(""))
			return true
		})
		c.get("env").each(func(_, e jval) bool {
			if val, ok := e.get("value").str(); ok {
				cs.env = append(cs.env, EnvVar{Name: e.get("name").strOr(""), Value: val})
			}
			return true
		})
		p.containers = append(p.containers, cs)
		return true
	})
	if len(p.containers) == 0 {
		return nil, fmt.Errorf("%w: pod %s has no containers", errNotPod, p.key())
	}
	v.get("status", "containerStatuses").each(func(_, cs jval) bool {
		name := cs.get("name").strOr("")
		n, _ := cs.get("restartCount").int()
		for i := range p.containers {
			if p.containers[i].name == name {
				p.containers[i].restarts = int(n)
				// A container that had started counts as restarted by
				// this (new) agent.
				if cs.get("containerID").kind() == '"' {
					p.containers[i].restarts++
				}
			}
		}
		return true
	})
	return p, nil
}

func parseTime(v jval) time.Time {
	s, ok := v.str()
	if !ok {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// podList is a parsed PodList.
type podList struct {
	rv   string
	pods []*pod
}

func parsePodList(v jval) (*podList, error) {
	if !v.get("kind").equal("PodList") {
		return nil, errors.New("response is not a PodList")
	}
	l := &podList{rv: v.get("metadata", "resourceVersion").strOr("")}
	var err error
	v.get("items").each(func(_, item jval) bool {
		var p *pod
		if p, err = parsePod(item); err != nil {
			return false
		}
		l.pods = append(l.pods, p)
		return true
	})
	if err != nil {
		return nil, err
	}
	if l.rv == "" {
		return nil, errors.New("PodList has no resourceVersion")
	}
	return l, nil
}

// watchEvent is one line of a watch stream.
type watchEvent struct {
	typ string
	obj jval
}

// parseWatchEvent reads one newline-delimited watch event.
func parseWatchEvent(line []byte) (watchEvent, error) {
	v, err := parseJSON(line)
	if err != nil {
		return watchEvent{}, fmt.Errorf("watch event: %w", err)
	}
	ev := watchEvent{typ: v.get("type").strOr(""), obj: v.get("object")}
	switch ev.typ {
	case "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR":
	default:
		return watchEvent{}, fmt.Errorf("watch event: unknown type %q", ev.typ)
	}
	if ev.obj.kind() != '{' {
		return watchEvent{}, errors.New("watch event: object is not an object")
	}
	return ev, nil
}
