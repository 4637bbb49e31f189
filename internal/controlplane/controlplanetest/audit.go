package controlplanetest

import (
	"bufio"
	"encoding/json"
	"os"
	"testing"
)

// ReadAudit decodes every event of the API server's audit log at path (one JSON object per line) into a
// T, the fields a test reads, and returns those keep selects. Lines that are not JSON events are
// skipped: the API server may be writing the last one while a test reads.
func ReadAudit[T any](t testing.TB, path string, keep func(*T) bool) []T {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20) // an event carrying a whole Node is larger than the default 64 KiB
	for sc.Scan() {
		var ev T
		if json.Unmarshal(sc.Bytes(), &ev) == nil && keep(&ev) {
			out = append(out, ev)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("audit log: %v", err)
	}
	return out
}
