package cli

import (
	"io"
	"os"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestReadmeDocumentsEveryServeFlag keeps the README's configuration table honest: every flag of
// `picogate serve` (and the global ones) must appear in it.
func TestReadmeDocumentsEveryServeFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	root := newRoot(io.Discard, io.Discard)
	serve, _, err := root.Find([]string{"serve"})
	if err != nil {
		t.Fatal(err)
	}
	check := func(f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		if !strings.Contains(string(readme), "`--"+f.Name+"`") {
			t.Errorf("README.md: flag --%s is not in the configuration table", f.Name)
		}
	}
	serve.LocalFlags().VisitAll(check)
	root.PersistentFlags().VisitAll(check)
}
