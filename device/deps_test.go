package device

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsOnlyTheStandardLibrary keeps the board-side library portable (TinyGo, a port to C): device
// and every package under it import the standard library and each other, nothing else.
func TestImportsOnlyTheStandardLibrary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./...").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const self = "github.com/picogate/picogate/device"
	for _, p := range strings.Fields(string(out)) {
		if p != self && !strings.HasPrefix(p, self+"/") {
			t.Errorf("device imports %s, want the standard library only", p)
		}
	}
}
