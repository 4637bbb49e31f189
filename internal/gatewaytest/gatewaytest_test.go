package gatewaytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBuildReplacesStaleBinary: a binary left in the build folder (here echo, which answers "version"),
// even one newer than every source, is replaced by one built from the source, never run as it is.
func TestBuildReplacesStaleBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("links picogate (about 5s)")
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	stale := filepath.Join(dir, "picogate")
	echo, err := exec.LookPath("echo")
	if err != nil {
		t.Skip("no echo binary to stand in for a stale build")
	}
	b, err := os.ReadFile(echo)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, b, 0o755); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(stale, future, future); err != nil {
		t.Fatal(err)
	}
	got, err := build(root, dir, "picogate")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(got, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s version: %v: %s", got, err, out)
	}
	if strings.TrimSpace(string(out)) == "version" {
		t.Errorf("got %q from the binary, want the one built from source", out)
	}
}

// TestBinaryIsCurrent: the path Binary returns is what go build would produce now: asking again
// does not relink (the build ID matches the source; go build only touches the file's time).
func TestBinaryIsCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("links picogate (about 5s)")
	}
	p := Binary(t, "picogate")
	before, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := ModuleRoot()
	if _, err := build(root, filepath.Dir(p), "picogate"); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Errorf("got a relink of %s right after Binary built it, want it current", p)
	}
}
