// Package deploy holds picogate's deployment manifests. It is a Go package only so `picogate setup` can
// carry the gateway's RBAC (rbac.yaml, and rbac-shared.yaml for --shared-identity) inside the binary:
// the file a reader reviews is the file setup applies, with no copy to drift.
//
// rbac.yaml is the single source of truth for the gateway's permissions. The kustomize base needs the
// same objects inside its own folder (kustomize refuses files outside a kustomization's root), so
// kubernetes/base/rbac.yaml is generated from it by `go generate ./deploy`, and a test fails when the two
// differ.
package deploy

//go:generate sh -c "{ printf '%s\\n' '# Generated from deploy/rbac.yaml by go generate ./deploy: edit that file, not this one.'; cat rbac.yaml; } > kubernetes/base/rbac.yaml"

import _ "embed"

//go:embed rbac.yaml
var rbacYAML string

//go:embed rbac-shared.yaml
var rbacSharedYAML string

// GeneratedHeader is the first line of kubernetes/base/rbac.yaml; the rest of that file is rbac.yaml.
const GeneratedHeader = "# Generated from deploy/rbac.yaml by go generate ./deploy: edit that file, not this one.\n"

// RBAC returns rbac.yaml: the Namespace, the ServiceAccount and the least-privilege roles of the gateway.
// Each call returns a new slice, so a caller may modify it.
func RBAC() []byte { return []byte(rbacYAML) }

// RBACShared returns rbac-shared.yaml: what the gateway needs on top of RBAC() to forward requests without
// a device credential (--shared-identity) as the restricted identity picogate:shared, and that
// identity's rights. Each call returns a new slice.
func RBACShared() []byte { return []byte(rbacSharedYAML) }
