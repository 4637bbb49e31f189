package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
)

// Body checks: the few request bodies the gateway reads before forwarding, because what they name decides
// whether the request may go on. The API server's NodeRestriction admission stops a node creating another
// Node, and nothing stops a node posting an event about another node; the gateway stops both before the
// API server sees them. Bodies are parsed the way the API server parses them (JSON, keys matched exactly),
// and anything the two could read differently (a key given twice, trailing data, another encoding) is
// refused rather than guessed.

// Errors of the body checks, wrapped with the detail. The gateway answers ErrBodyMalformed with 400,
// ErrBodyMediaType with 415 and ErrBodyForbidden with 403.
var (
	ErrBodyMalformed = errors.New("malformed request body")
	ErrBodyMediaType = errors.New("unsupported request body type")
	ErrBodyForbidden = errors.New("request body not allowed")
)

// BodyKind is the check a request's body needs.
type BodyKind uint8

const (
	// BodyNone: the body is forwarded unread.
	BodyNone BodyKind = iota
	// BodyNodeCreate: POST /api/v1/nodes, a Node create (ParseNodeCreate).
	BodyNodeCreate
	// BodyEvent: a create or update of an Event, core/v1 or events.k8s.io (CheckEvent).
	BodyEvent
	// BodyEventPatch: a PATCH of an Event (CheckEvent).
	BodyEventPatch
)

// BodyCheck returns the check a request needs. path has been accepted by CheckPath.
func BodyCheck(method, path string) BodyKind {
	switch method {
	case "POST", "PUT", "PATCH":
	default:
		return BodyNone
	}
	if path == "/api/v1/nodes" {
		if method == "POST" {
			return BodyNodeCreate
		}
		return BodyNone
	}
	if !isEventPath(path) {
		return BodyNone
	}
	if method == "PATCH" {
		return BodyEventPatch
	}
	return BodyEvent
}

// isEventPath matches /api/v1/namespaces/NS/events[/NAME] and
// /apis/events.k8s.io/VERSION/namespaces/NS/events[/NAME].
func isEventPath(path string) bool {
	var rest string
	switch {
	case strings.HasPrefix(path, "/api/v1/namespaces/"):
		rest = path[len("/api/v1/namespaces/"):]
	case strings.HasPrefix(path, "/apis/events.k8s.io/"):
		version, after, ok := strings.Cut(path[len("/apis/events.k8s.io/"):], "/")
		if !ok || version == "" || !strings.HasPrefix(after, "namespaces/") {
			return false
		}
		rest = after[len("namespaces/"):]
	default:
		return false
	}
	_, rest, ok := strings.Cut(rest, "/") // the namespace
	if !ok {
		return false
	}
	resource, _, _ := strings.Cut(rest, "/")
	return resource == "events"
}

// NodeCreate is a Node create body that passed ParseNodeCreate.
type NodeCreate struct {
	// Name is the Node's metadata.name: what the request creates.
	Name string
	obj  map[string]any
}

// ParseNodeCreate checks the body of POST /api/v1/nodes: one JSON object, no key given twice, a Node
// (kind and apiVersion, when given, Node and v1), named by a valid metadata.name and not by
// generateName, with labels, when given, an object.
func ParseNodeCreate(contentType string, body []byte) (*NodeCreate, error) {
	if err := jsonMediaType(contentType, "application/json"); err != nil {
		return nil, err
	}
	obj, err := decodeObject(body)
	if err != nil {
		return nil, err
	}
	if k, ok := obj["kind"]; ok && k != "Node" {
		return nil, fmt.Errorf("%w: kind %s, want Node", ErrBodyMalformed, quoteAny(k))
	}
	if v, ok := obj["apiVersion"]; ok && v != "v1" {
		return nil, fmt.Errorf("%w: apiVersion %s, want v1", ErrBodyMalformed, quoteAny(v))
	}
	meta, ok := obj["metadata"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: a Node needs metadata", ErrBodyMalformed)
	}
	if g, ok := meta["generateName"]; ok && g != "" {
		return nil, fmt.Errorf("%w: a Node must be created by its name, not generateName", ErrBodyForbidden)
	}
	name, _ := meta["name"].(string)
	if !validName(name) {
		return nil, fmt.Errorf("%w: metadata.name must be a valid node name", ErrBodyMalformed)
	}
	if l, ok := meta["labels"]; ok && l != nil {
		labels, ok := l.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: metadata.labels must be an object", ErrBodyMalformed)
		}
		for k, v := range labels {
			if _, ok := v.(string); !ok {
				return nil, fmt.Errorf("%w: label %s must be a string", ErrBodyMalformed, quoteAny(k))
			}
		}
	}
	return &NodeCreate{Name: name, obj: obj}, nil
}

// WithLabel returns the body with metadata.labels[key] = value, replacing any value the sender gave.
// Numbers keep their exact text; nothing but the label changes in meaning.
func (n *NodeCreate) WithLabel(key, value string) ([]byte, error) {
	meta := n.obj["metadata"].(map[string]any)
	labels, _ := meta["labels"].(map[string]any)
	if labels == nil {
		labels = map[string]any{}
		meta["labels"] = labels
	}
	labels[key] = value
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(n.obj); err != nil {
		return nil, fmt.Errorf("encoding the Node: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// SetPodCIDRs makes the Node's spec.podCIDRs exactly cidrs and spec.podCIDR the first of them, or
// removes both when cidrs is empty, whatever the sender gave: a device never chooses its own pod
// CIDR, since one kube-controller-manager's range allocator cannot place (outside the cluster CIDR)
// stops it at its every start while the Node exists. The change is in the body WithLabel returns.
func (n *NodeCreate) SetPodCIDRs(cidrs []string) error {
	spec, ok := n.obj["spec"].(map[string]any)
	switch {
	case n.obj["spec"] == nil:
		spec = map[string]any{}
	case !ok:
		return fmt.Errorf("%w: spec must be an object", ErrBodyMalformed)
	}
	delete(spec, "podCIDR")
	delete(spec, "podCIDRs")
	if len(cidrs) > 0 {
		spec["podCIDR"] = cidrs[0]
		list := make([]any, len(cidrs))
		for i, c := range cidrs {
			list[i] = c
		}
		spec["podCIDRs"] = list
	}
	if len(spec) > 0 || n.obj["spec"] != nil {
		n.obj["spec"] = spec
	}
	return nil
}

// eventRefs are the fields of an Event, core/v1 and events.k8s.io/v1, that name the object it is about.
var eventRefs = [...]string{"involvedObject", "regarding", "related"}

// CheckEvent checks the body of an Event write by node self ("" for a sender that is no node): every
// object reference in it (involvedObject, regarding, related) that names a Node, or names no kind at
// all, must name self. A patch may change such a reference only under the same rule; a JSON patch may
// not touch them at all, since it can change a name alone.
func CheckEvent(kind BodyKind, contentType string, body []byte, self string) error {
	if kind == BodyEventPatch {
		mt, err := mediaType(contentType)
		if err != nil {
			return err
		}
		switch mt {
		case "application/json-patch+json":
			return checkJSONPatch(body)
		case "application/merge-patch+json", "application/strategic-merge-patch+json":
		default:
			return fmt.Errorf("%w: an event patch must be a JSON merge, strategic merge or JSON patch, not %s", ErrBodyMediaType, mt)
		}
	} else if err := jsonMediaType(contentType, "application/json"); err != nil {
		return err
	}
	obj, err := decodeObject(body)
	if err != nil {
		return err
	}
	for _, field := range eventRefs {
		v, ok := obj[field]
		if !ok {
			continue
		}
		ref, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%w: %s must be an object", ErrBodyMalformed, field)
		}
		kind, _ := ref["kind"].(string)
		name, _ := ref["name"].(string)
		if (kind == "" || strings.EqualFold(kind, "Node")) && (self == "" || name != self) {
			return fmt.Errorf("%w: an event's %s must be this node's own Node (%s) or another kind of object, not node %s", ErrBodyForbidden, field, selfOr(self, "none"), quoteAny(name))
		}
	}
	return nil
}

// checkJSONPatch refuses a JSON patch (RFC 6902) that touches an event's object references, or the
// whole document.
func checkJSONPatch(body []byte) error {
	if err := checkJSON(body); err != nil {
		return err
	}
	var ops []map[string]any
	if err := json.Unmarshal(body, &ops); err != nil {
		return fmt.Errorf("%w: a JSON patch must be an array of operations", ErrBodyMalformed)
	}
	for i, op := range ops {
		for _, k := range []string{"path", "from"} {
			v, ok := op[k]
			if !ok {
				continue
			}
			p, ok := v.(string)
			if !ok {
				return fmt.Errorf("%w: operation %d: %s must be a string", ErrBodyMalformed, i, k)
			}
			first, _, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
			first = strings.NewReplacer("~1", "/", "~0", "~").Replace(first)
			if p == "" || first == "" || first == eventRefs[0] || first == eventRefs[1] || first == eventRefs[2] {
				return fmt.Errorf("%w: a JSON patch of an event may not change %s", ErrBodyForbidden, quoteAny(p))
			}
		}
	}
	return nil
}

// mediaType is the Content-Type's media type, lower case; an absent Content-Type counts as JSON, which
// is how the API server reads a body without one.
func mediaType(contentType string) (string, error) {
	if contentType == "" {
		return "application/json", nil
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return "", fmt.Errorf("%w: Content-Type %s", ErrBodyMediaType, quoteAny(contentType))
	}
	return mt, nil
}

func jsonMediaType(contentType, want string) error {
	mt, err := mediaType(contentType)
	if err != nil {
		return err
	}
	if mt != want {
		return fmt.Errorf("%w: want %s, not %s", ErrBodyMediaType, want, mt)
	}
	return nil
}

// decodeObject decodes one JSON object, keeping numbers' text, after checkJSON.
func decodeObject(body []byte) (map[string]any, error) {
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, fmt.Errorf("%w: want one JSON object", ErrBodyMalformed)
	}
	return obj, nil
}

// checkJSON accepts exactly one JSON value with no key given twice in any object. Go and the API server
// both keep the last of two equal keys today, but a reader that keeps the first exists somewhere, and a
// body that means two things is refused.
func checkJSON(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	type frame struct {
		object    bool
		expectKey bool
		keys      map[string]struct{}
	}
	var stack []frame
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].expectKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if len(stack) != 0 {
				return fmt.Errorf("%w: unexpected end of JSON", ErrBodyMalformed)
			}
			return fmt.Errorf("%w: empty body", ErrBodyMalformed)
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBodyMalformed, err)
		}
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].expectKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:n-1]
				valueDone()
			} else {
				key := tok.(string) // the decoder allows nothing else here
				if _, dup := stack[n-1].keys[key]; dup {
					return fmt.Errorf("%w: key %s given twice", ErrBodyMalformed, quoteAny(key))
				}
				stack[n-1].keys[key] = struct{}{}
				stack[n-1].expectKey = false
				continue
			}
		} else {
			switch tok {
			case json.Delim('{'):
				stack = append(stack, frame{object: true, expectKey: true, keys: map[string]struct{}{}})
				continue
			case json.Delim('['):
				stack = append(stack, frame{})
				continue
			case json.Delim(']'):
				stack = stack[:len(stack)-1]
			}
			valueDone()
		}
		if len(stack) == 0 {
			break
		}
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the JSON value", ErrBodyMalformed)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the JSON value", ErrBodyMalformed)
	}
	return nil
}

// quoteAny quotes a value from a body for an error message, short and without control characters.
func quoteAny(v any) string {
	s, ok := v.(string)
	if !ok {
		b, _ := json.Marshal(v)
		s = string(b)
	}
	return strconvQuote(strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s))
}
