package serve

import (
	"bufio"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/picogate/picogate/internal/gatewaytest"
)

// TestGCFlagsTakeEffect runs `picogate serve` and reads the collector's settings back from the runtime
// through /metrics: the flags apply, their defaults apply, and GOGC / GOMEMLIMIT win over them.
func TestGCFlagsTakeEffect(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(unreachableKubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		args, env      []string
		gogc, memlimit float64
	}{
		{"defaults", nil, nil, 400, 192 << 20},
		{"flags", []string{"--gc-percent", "123", "--memory-limit", "209715200"}, nil, 123, 200 << 20},
		{"environment wins", []string{"--gc-percent", "123", "--memory-limit", "209715200"}, []string{"GOGC=77", "GOMEMLIMIT=150MiB"}, 77, 150 << 20},
		{"environment wins only for what it sets", []string{"--gc-percent", "123", "--memory-limit", "209715200"}, []string{"GOGC=77", "GOMEMLIMIT="}, 77, 200 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The test's own environment must not choose for the child.
			env := append([]string{"GOGC=", "GOMEMLIMIT="}, tt.env...)
			gw := gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: kubeconfig, Args: tt.args, Env: env, NoWaitReady: true})
			got := gauges(t, "http://"+gw.Admin+"/metrics", "go_gc_gogc_percent", "go_gc_gomemlimit_bytes")
			if got["go_gc_gogc_percent"] != tt.gogc {
				t.Errorf("go_gc_gogc_percent: got %v, want %v", got["go_gc_gogc_percent"], tt.gogc)
			}
			if got["go_gc_gomemlimit_bytes"] != tt.memlimit {
				t.Errorf("go_gc_gomemlimit_bytes: got %v, want %v", got["go_gc_gomemlimit_bytes"], tt.memlimit)
			}
		})
	}
}

// gauges reads the named unlabelled series from a Prometheus text exposition.
func gauges(t *testing.T, url string, names ...string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || !want[name] {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("%s: %v", sc.Text(), err)
		}
		out[name] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			t.Fatalf("%s: no series %s", url, n)
		}
	}
	return out
}
