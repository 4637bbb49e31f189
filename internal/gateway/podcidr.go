package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

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

// NodePodCIDRGuard returns the check (Config.Checks) that refuses a device's write of its own Node —
// PUT, or a JSON, merge or strategic-merge PATCH of /api/v1/nodes/NAME — that would set spec.podCIDR or
// spec.podCIDRs to anything but what podCIDRs returns now. A Node may go from no pod CIDR to one
// (NodeRestriction allows it), and one outside the cluster CIDR stops kube-controller-manager at its
// every start. Writes of the status subresource cannot change the spec and are not read.
func NodePodCIDRGuard(podCIDRs func(context.Context) []string) Check {
	return func(in *Inspection) *status.Error {
		if in.Local || (in.Method != http.MethodPut && in.Method != http.MethodPatch) {
			return nil
		}
		if in.Identity.Device() == nil && !in.Identity.Shared() {
			return nil
		}
		rest, ok := strings.CutPrefix(in.Path, "/api/v1/nodes/")
		if !ok || rest == "" || strings.Contains(rest, "/") {
			return nil
		}
		vals, unknown, err := podCIDRWrites(in.ContentType, in.Body)
		if err != nil {
			return &status.Error{Code: http.StatusBadRequest, Message: "reading the Node write: " + err.Error()}
		}
		if len(vals) == 0 && !unknown {
			return nil
		}
		allowed := podCIDRs(in.Context)
		for _, v := range vals {
			if !slices.Contains(allowed, v) {
				unknown = true
			}
		}
		if unknown {
			return &status.Error{Code: http.StatusForbidden, Message: "a device may not set its Node's pod CIDR: the gateway sets it when the Node is created"}
		}
		return nil
	}
}

// podCIDRWrites returns the pod CIDRs a Node write sets, and unknown when it touches them in a way
// that does not name them (a JSON patch moving or removing them, a patch directive about them).
func podCIDRWrites(contentType string, body []byte) (vals []string, unknown bool, err error) {
	mt, _, _ := strings.Cut(contentType, ";")
	var doc any
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&doc); err != nil {
		return nil, false, err
	}
	if strings.TrimSpace(mt) == "application/json-patch+json" {
		ops, _ := doc.([]any)
		for _, o := range ops {
			op, _ := o.(map[string]any)
			path, _ := op["path"].(string)
			from, _ := op["from"].(string)
			switch {
			case strings.HasPrefix(path, "/spec/podCIDR"):
				if s, ok := op["value"].(string); ok && op["op"] != "remove" {
					vals = append(vals, s)
				} else if l, ok := op["value"].([]any); ok && op["op"] != "remove" {
					v, u := stringsOf(l)
					vals, unknown = append(vals, v...), unknown || u
				} else {
					unknown = true
				}
			case path == "" || path == "/spec":
				v, u := specPodCIDRs(op["value"], path == "/spec")
				vals, unknown = append(vals, v...), unknown || u
			case strings.HasPrefix(from, "/spec/podCIDR"):
				unknown = true
			}
		}
		return vals, unknown, nil
	}
	v, u := specPodCIDRs(doc, false)
	return v, u, nil
}

// specPodCIDRs reads spec.podCIDR and spec.podCIDRs from a Node or a patch of one (isSpec: doc is the
// spec itself). A patch directive ("$...") naming them is unknown.
func specPodCIDRs(doc any, isSpec bool) (vals []string, unknown bool) {
	spec, _ := doc.(map[string]any)
	if !isSpec {
		spec, _ = spec["spec"].(map[string]any)
	}
	for k, v := range spec {
		switch {
		case k == "podCIDR":
			if s, ok := v.(string); ok {
				vals = append(vals, s)
			} else if v != nil {
				unknown = true
			}
		case k == "podCIDRs":
			l, _ := v.([]any)
			s, u := stringsOf(l)
			vals, unknown = append(vals, s...), unknown || u || (v != nil && l == nil)
		case strings.HasPrefix(k, "$") && (strings.Contains(k, "podCIDR") || strings.Contains(fmt.Sprint(v), "podCIDR")):
			unknown = true
		}
	}
	return vals, unknown
}

func stringsOf(l []any) (out []string, unknown bool) {
	for _, e := range l {
		s, ok := e.(string)
		if !ok {
			return out, true
		}
		out = append(out, s)
	}
	return out, false
}
