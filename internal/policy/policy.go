// Package policy decides, before anything is forwarded, which Kubernetes API requests a device may make.
// The API server's Node authorizer and NodeRestriction admission remain the authority; this allowlist is
// defense in depth, and it means a misbehaving device costs the API server nothing. The rules are data:
// Default returns them, a YAML or JSON file can replace them (see docs/policy.md).
package policy

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/picogate/picogate/device"
)

// Rule allows one shape of request. Path is a slash-separated pattern whose segments are literals,
// "{self}" (the device's own node name) or "{any}" (any single name-like segment).
type Rule struct {
	// Name identifies the rule in refusals, logs and metrics (the route class).
	Name string `json:"name"`
	// Methods are the HTTP methods allowed, e.g. ["GET", "PATCH"].
	Methods []string `json:"methods"`
	// Path is the pattern the cleaned request path must match exactly.
	Path string `json:"path"`
	// Query lists parameters that must be present exactly once with this value; "{self}" in a value is
	// replaced by the device's name.
	Query map[string]string `json:"query,omitempty"`
	// Watch allows the request to be a watch (watch=true). Watches are refused otherwise.
	Watch bool `json:"watch,omitempty"`
}

// File is the shape of a policy file: {"rules": [...]}.
type File struct {
	Rules []Rule `json:"rules"`
}

// Default is the allowlist picogate enforces unless a policy file replaces it: what a kubelet-like device
// needs for its own Node, Lease and pods, and nothing cluster-wide.
func Default() []Rule {
	const ns = "/api/v1/namespaces/{any}"
	return []Rule{
		{Name: "node-create", Methods: []string{"POST"}, Path: "/api/v1/nodes"},
		{Name: "node", Methods: []string{"GET", "PATCH", "PUT"}, Path: "/api/v1/nodes/{self}"},
		{Name: "node-status", Methods: []string{"GET", "PATCH", "PUT"}, Path: "/api/v1/nodes/{self}/status"},
		{Name: "lease-create", Methods: []string{"POST"}, Path: "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"},
		{Name: "lease", Methods: []string{"GET", "PATCH", "PUT"}, Path: "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self}"},
		{Name: "pods-list", Methods: []string{"GET"}, Path: "/api/v1/pods", Query: map[string]string{"fieldSelector": "spec.nodeName={self}"}, Watch: true},
		{Name: "pod", Methods: []string{"GET", "DELETE"}, Path: ns + "/pods/{any}"},
		{Name: "pod-status", Methods: []string{"GET", "PATCH", "PUT"}, Path: ns + "/pods/{any}/status"},
		{Name: "events", Methods: []string{"POST"}, Path: ns + "/events"},
		{Name: "events-v1", Methods: []string{"POST"}, Path: "/apis/events.k8s.io/v1/namespaces/{any}/events"},
		{Name: "configmap", Methods: []string{"GET"}, Path: ns + "/configmaps/{any}"},
		{Name: "secret", Methods: []string{"GET"}, Path: ns + "/secrets/{any}"},
		{Name: "version", Methods: []string{"GET"}, Path: "/version"},
		{Name: "healthz", Methods: []string{"GET"}, Path: "/healthz"},
	}
}

// Load reads a policy file (YAML or JSON).
func Load(path string) ([]Rule, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	var f File
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("parsing policy %s: %w", path, err)
	}
	return f.Rules, nil
}

// Policy is a compiled allowlist. It is immutable and safe for concurrent use.
type Policy struct {
	rules []compiled
}

type segKind uint8

const (
	segLiteral segKind = iota
	segSelf
	segAny
)

type segment struct {
	kind segKind
	lit  string
}

type queryReq struct {
	key            string
	prefix, suffix string // the value around {self}, or the whole value when hasSelf is false
	hasSelf        bool
}

type compiled struct {
	Rule
	methods uint16
	segs    []segment
	query   []queryReq
}

var methodBits = map[string]uint16{
	http.MethodGet: 1, http.MethodHead: 2, http.MethodPost: 4, http.MethodPut: 8,
	http.MethodPatch: 16, http.MethodDelete: 32, http.MethodOptions: 64,
}

// New compiles rules, reporting every invalid rule at once.
func New(rules []Rule) (*Policy, error) {
	var errs []error
	p := &Policy{}
	names := map[string]bool{}
	for i, r := range rules {
		c, err := compile(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("rule %d (%q): %w", i, r.Name, err))
			continue
		}
		if names[r.Name] {
			errs = append(errs, fmt.Errorf("rule %d: name %q used twice", i, r.Name))
		}
		names[r.Name] = true
		p.rules = append(p.rules, c)
	}
	if len(rules) == 0 {
		errs = append(errs, errors.New("no rules: a policy must allow something"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("invalid policy: %w", err)
	}
	return p, nil
}

func compile(r Rule) (compiled, error) {
	var errs []error
	c := compiled{Rule: r}
	if r.Name == "" {
		errs = append(errs, errors.New("name is empty"))
	}
	if len(r.Methods) == 0 {
		errs = append(errs, errors.New("no methods"))
	}
	for _, m := range r.Methods {
		bit, ok := methodBits[strings.ToUpper(m)]
		if !ok {
			errs = append(errs, fmt.Errorf("method %q not supported", m))
		}
		c.methods |= bit
	}
	if err := CheckPath(strings.NewReplacer("{self}", "x", "{any}", "x").Replace(r.Path)); err != nil || r.Path == "/" {
		errs = append(errs, fmt.Errorf("path %q: must be an absolute path without empty or dot segments", r.Path))
	} else {
		for s := range strings.SplitSeq(r.Path[1:], "/") {
			switch s {
			case "{self}":
				c.segs = append(c.segs, segment{kind: segSelf})
			case "{any}":
				c.segs = append(c.segs, segment{kind: segAny})
			default:
				if strings.ContainsAny(s, "{}") {
					errs = append(errs, fmt.Errorf("path %q: only {self} and {any} are placeholders", r.Path))
				}
				c.segs = append(c.segs, segment{kind: segLiteral, lit: s})
			}
		}
	}
	for k, v := range r.Query {
		q := queryReq{key: k, prefix: v}
		if before, after, ok := strings.Cut(v, "{self}"); ok {
			q = queryReq{key: k, prefix: before, suffix: after, hasSelf: true}
		}
		c.query = append(c.query, q)
	}
	return c, errors.Join(errs...)
}

// Request is what a decision is made on.
type Request struct {
	Method string
	Path   string // the raw path, already accepted by CheckPath
	Query  Query
	Watch  bool
	// Self is the device's node name; empty when the device is not identified (--shared-identity), in
	// which case {self} matches any valid name and the API server's RBAC decides the rest.
	Self string
}

// Decision is the result of Allow.
type Decision struct {
	// Rule is the name of the rule that allowed the request (the route class), or of the nearest rule
	// when the request was refused.
	Rule   string
	Reason string // why it was refused; empty when allowed
}

// Allowed reports whether the request may be forwarded.
func (d Decision) Allowed() bool { return d.Reason == "" }

// Allow decides a request. A refusal names the rule whose path matched but whose method, query or
// watch condition did not, so a firmware author sees what to change.
func (p *Policy) Allow(r Request) Decision {
	bit := methodBits[r.Method]
	var near *compiled
	for i := range p.rules {
		c := &p.rules[i]
		if !c.matchPath(r.Path, r.Self) {
			continue
		}
		if c.methods&bit == 0 {
			near = c
			continue
		}
		if reason := c.checkQuery(r); reason != "" {
			return Decision{Rule: c.Name, Reason: reason}
		}
		return Decision{Rule: c.Name}
	}
	if near != nil {
		return Decision{Rule: near.Name, Reason: fmt.Sprintf("rule %q does not allow %s %s", near.Name, r.Method, r.Path)}
	}
	return Decision{Rule: "none", Reason: fmt.Sprintf("no rule allows %s %s for %s", r.Method, r.Path, selfOrShared(r.Self))}
}

func selfOrShared(self string) string {
	if self == "" {
		return "an unidentified device"
	}
	return "node " + self
}

func (c *compiled) checkQuery(r Request) string {
	if r.Watch && !c.Watch {
		return fmt.Sprintf("rule %q does not allow watches", c.Name)
	}
	for _, q := range c.query {
		v, ok := r.Query.Get(q.key)
		if !ok || !q.matches(v, r.Self) {
			want := q.prefix
			if q.hasSelf {
				want += selfOr(r.Self, "NAME") + q.suffix
			}
			return fmt.Sprintf("rule %q requires %s=%s", c.Name, q.key, want)
		}
	}
	return ""
}

func selfOr(self, def string) string {
	if self == "" {
		return def
	}
	return self
}

func (q queryReq) matches(v, self string) bool {
	if !q.hasSelf {
		return v == q.prefix
	}
	if !strings.HasPrefix(v, q.prefix) || !strings.HasSuffix(v, q.suffix) || len(v) < len(q.prefix)+len(q.suffix) {
		return false
	}
	mid := v[len(q.prefix) : len(v)-len(q.suffix)]
	if self == "" {
		return validName(mid)
	}
	return mid == self
}

// matchPath walks the pattern and the path together without allocating.
func (c *compiled) matchPath(path, self string) bool {
	rest := path[1:]
	for i, s := range c.segs {
		seg, tail, more := strings.Cut(rest, "/")
		switch s.kind {
		case segLiteral:
			if seg != s.lit {
				return false
			}
		case segSelf:
			if self == "" {
				if !validName(seg) {
					return false
				}
			} else if seg != self {
				return false
			}
		case segAny:
			if !validName(seg) {
				return false
			}
		}
		last := i == len(c.segs)-1
		if last != !more {
			return false
		}
		rest = tail
	}
	return true
}

// validName accepts a Kubernetes object name (DNS-1123 subdomain, ≤ 253, the rule of device.ValidateNodeName,
// which most kinds share with Node): the only thing a placeholder segment may be.
func validName(s string) bool { return device.ValidateNodeName(s) == nil }
