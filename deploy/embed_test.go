package deploy

import (
	"os"
	"strings"
	"testing"
)

// TestKustomizeBaseRBACIsRBACYaml keeps the kustomize base's copy of the RBAC equal to rbac.yaml, the
// one the binary embeds.
func TestKustomizeBaseRBACIsRBACYaml(t *testing.T) {
	src, err := os.ReadFile("rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	gen, err := os.ReadFile("kubernetes/base/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	body, ok := strings.CutPrefix(string(gen), GeneratedHeader)
	if !ok {
		t.Fatalf("kubernetes/base/rbac.yaml: got first line %q, want %q", strings.SplitN(string(gen), "\n", 2)[0], strings.TrimSpace(GeneratedHeader))
	}
	if body != string(src) {
		t.Errorf("kubernetes/base/rbac.yaml differs from rbac.yaml: run `go generate ./deploy`")
	}
	if string(RBAC()) != string(src) {
		t.Errorf("RBAC(): got %d bytes, want rbac.yaml's %d", len(RBAC()), len(src))
	}
}
