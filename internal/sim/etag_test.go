package sim

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// TestFirmwareETag: a firmware-mode board with FirmwareETag sends the ConfigMap's last ETag as
// If-None-Match, keeps its values on a 304, and takes new ones when the ConfigMap changed; without it,
// the board sends no If-None-Match, as the unmodified firmware.
func TestFirmwareETag(t *testing.T) {
	var mu sync.Mutex
	version, sent := "1", []string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, r.Header.Get("If-None-Match"))
		etag := `"` + version + `"`
		w.Header().Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"data":{"memory_values":"[` + version + `]"}}`))
	}))
	defer srv.Close()
	for _, useETag := range []bool{false, true} {
		mu.Lock()
		version, sent = "1", nil
		mu.Unlock()
		f, err := newFirmware(Config{Gateway: srv.URL, FirmwareETag: useETag}, Credential{Name: "pico-1", Auth: "token", Token: "pgt_x"})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		f.getConfig(ctx)
		f.getConfig(ctx)
		mu.Lock()
		version = "2"
		mu.Unlock()
		f.getConfig(ctx)
		mu.Lock()
		got := sent
		mu.Unlock()
		want := []string{"", "", ""}
		if useETag {
			want = []string{"", `"1"`, `"1"`}
		}
		if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
			t.Errorf("FirmwareETag %v: sent If-None-Match %q, want %q", useETag, got, want)
		}
		if r := f.Snapshot(); r.ConfigValues != "[2]" || len(r.Errors) != 0 {
			t.Errorf("FirmwareETag %v: got values %q, errors %v, want [2] and none", useETag, r.ConfigValues, r.Errors)
		}
	}
}
