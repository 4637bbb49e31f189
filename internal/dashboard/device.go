package dashboard

import (
	"slices"
	"strings"
	"time"

	"github.com/picogate/picogate/internal/registry"
)

// RequestView is one request of a device's ring, as the device page shows it.
type RequestView struct {
	At     int64   `json:"at"` // unix milliseconds
	Method string  `json:"method"`
	Path   string  `json:"path"`
	Status int     `json:"status"`
	Millis float64 `json:"ms"`
	Rule   string  `json:"rule"`
	Class  string  `json:"class"`
	Watch  bool    `json:"watch,omitempty"`
	Reason string  `json:"reason,omitempty"`
}

func (e *entry) view() RequestView {
	return RequestView{At: e.at / int64(time.Millisecond), Method: methods[e.method], Path: e.path,
		Status: int(e.status), Millis: float64(e.dur.Microseconds()) / 1000, Rule: e.rule, Class: e.class.String(), Watch: e.watch}
}

// DeviceView is the device page.
type DeviceView struct {
	Row        Row    `json:"row"`
	Source     string `json:"source"`            // where the device may connect from: a CIDR or "any"
	Created    int64  `json:"created,omitempty"` // unix milliseconds
	Revoked    int64  `json:"revoked,omitempty"`
	HardwareID string `json:"hardwareId,omitempty"`
	Address    string `json:"address,omitempty"` // the Node's InternalIP
	// Requests and Refusals are the device's rings, newest first.
	Requests   []RequestView   `json:"requests"`
	Refusals   []RequestView   `json:"refusals"`
	Conditions []NodeCondition `json:"conditions"`
	Pods       []PodInfo       `json:"pods"`
	// Commands are what an operator would run next, shown as text.
	Commands []string `json:"commands"`
	Kube     string   `json:"kube,omitempty"`
	Now      int64    `json:"now"`
	// RingRequests and RingRefusals are the rings' lengths (how many the page can show at most).
	RingRequests int `json:"ringRequests"`
	RingRefusals int `json:"ringRefusals"`
}

// Device builds the device page of name; false if the registry does not know it.
func (d *Dashboard) Device(name string) (DeviceView, bool) {
	dev, ok := d.cfg.Registry.ByName(name)
	if !ok {
		return DeviceView{}, false
	}
	now := d.cfg.Now()
	v := DeviceView{
		Row:    Row{Name: name, Auth: string(dev.Auth), Status: deviceStatus(dev)},
		Source: dev.SourceString(), HardwareID: dev.HardwareID, Now: now.UnixMilli(),
		Requests: []RequestView{}, Refusals: []RequestView{}, Conditions: []NodeCondition{}, Pods: []PodInfo{},
		RingRequests: d.cfg.RequestsPerDevice, RingRefusals: d.cfg.RefusalsPerDevice,
	}
	if !dev.Created.IsZero() {
		v.Created = dev.Created.UnixMilli()
	}
	if dev.IsRevoked() {
		v.Revoked = dev.Revoked.UnixMilli()
	}
	d.kube.mu.RLock()
	v.Kube = d.kube.status
	kr := d.kube.row(name)
	v.Row.Ready, v.Row.LeaseRenew, v.Row.Pods, v.Row.Firmware, v.Row.Board = kr.ready, kr.leaseRenew, kr.pods, kr.firmware, kr.board
	if n := d.kube.nodes[name]; n != nil {
		v.Conditions = append(v.Conditions, n.conditions...)
		v.Address = n.address
	}
	for key, phase := range d.kube.pods[name] {
		ns, pod, _ := strings.Cut(key, "/")
		v.Pods = append(v.Pods, PodInfo{Namespace: ns, Name: pod, Phase: string(phase)})
	}
	d.kube.mu.RUnlock()
	slices.SortFunc(v.Pods, func(a, b PodInfo) int {
		if a.Namespace != b.Namespace {
			return strings.Compare(a.Namespace, b.Namespace)
		}
		return strings.Compare(a.Name, b.Name)
	})
	if s := d.stats.get(name); s != nil {
		s.fill(&v.Row, now)
		v.Requests, v.Refusals = s.rings()
	}
	v.Commands = commands(dev, name)
	return v, true
}

// Anonymous is the page of requests that had no device identity: the shared identity, and requests
// refused before a device was identified (no, unknown or revoked credentials).
func (d *Dashboard) Anonymous() DeviceView {
	now := d.cfg.Now()
	v := DeviceView{Row: Row{Name: "", Status: "anonymous"}, Now: now.UnixMilli(), Conditions: []NodeCondition{}, Pods: []PodInfo{},
		Commands: []string{}, RingRequests: d.cfg.RequestsPerDevice, RingRefusals: d.cfg.RefusalsPerDevice}
	d.anon.fill(&v.Row, now)
	v.Requests, v.Refusals = d.anon.rings()
	return v
}

// rings returns the device's requests and refusals, newest first.
func (s *deviceStats) rings() (reqs, refs []RequestView) {
	s.mu.Lock()
	defer s.mu.Unlock()
	reqs = make([]RequestView, 0, len(s.requests))
	for i := range len(s.requests) {
		e := &s.requests[(s.reqNext+len(s.requests)-1-i)%len(s.requests)]
		reqs = append(reqs, e.view())
	}
	refs = make([]RequestView, 0, len(s.refusals))
	for i := range len(s.refusals) {
		r := &s.refusals[(s.refNext+len(s.refusals)-1-i)%len(s.refusals)]
		v := r.view()
		v.Reason = r.reason
		refs = append(refs, v)
	}
	return reqs, refs
}

// commands are the next steps an operator may take for a device, as text to copy.
func commands(dev *registry.Device, name string) []string {
	var out []string
	switch {
	case dev.IsRevoked():
		out = append(out, "picogate device remove "+name, "kubectl delete node "+name)
	case dev.Enrollment != nil && dev.Enrollment.Approved.IsZero():
		out = append(out, "picogate device approve "+name, "picogate device remove "+name)
	default:
		out = append(out, "picogate device revoke "+name, "picogate device rotate "+name)
	}
	return append(out,
		"kubectl describe node "+name,
		"kubectl get pods -A -o wide --field-selector spec.nodeName="+name,
		"kubectl -n kube-node-lease get lease "+name,
		"picogate device list")
}
