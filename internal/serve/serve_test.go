package serve

import (
	"net"

	"github.com/picogate/picogate/internal/gateway"
	"github.com/picogate/picogate/internal/upstream"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// unreachableKubeconfig names an API server nobody listens on: building the parts never contacts it, and
// the gateway starts anyway (not ready), which is all a test of its process settings needs.
const unreachableKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: none
  cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}
users:
- name: none
  user: {token: unused}
contexts:
- name: none
  context: {cluster: none, user: none}
current-context: none
`

// TestBuildReportsEveryProblem: a start-up with several independent mistakes names all of them at once,
// and leaves no port bound behind.
func TestBuildReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(unreachableKubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{
			name: "no kubeconfig, no policy file, negative memory limit, device port taken",
			cfg: Config{Upstream: upstream.Config{Kubeconfig: "/nonexistent/kubeconfig"}, PolicyFile: filepath.Join(dir, "missing-policy.yaml"),
				MemoryLimit: -1, Listen: busy.Addr().String()},
			want: []string{"/nonexistent/kubeconfig", "missing-policy.yaml", "--memory-limit", "device port"},
		},
		{
			name: "gateway settings still checked when the policy file fails",
			cfg: Config{Upstream: upstream.Config{Kubeconfig: kubeconfig}, PolicyFile: filepath.Join(dir, "missing-policy.yaml"),
				Gateway: gateway.Config{RequireHMAC: true, SharedIdentity: true}, Listen: "127.0.0.1:0"},
			want: []string{"missing-policy.yaml", "require hmac and shared identity contradict each other"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.AdminListen = freeAddr(t)
			p, err := build(tt.cfg.withDefaults())
			if err == nil {
				t.Fatalf("got parts %v, want an error", p)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to mention %q", err, w)
				}
			}
			ln, lerr := net.Listen("tcp", tt.cfg.AdminListen)
			if lerr != nil {
				t.Fatalf("admin port still bound after a failed start: %v", lerr)
			}
			ln.Close()
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The upstream pool keeps as many idle connections as requests may be in flight: a burst's connections
// closed after one request would each cost a TLS handshake on both ends at the next burst.
func TestUpstreamPoolKeepsTheInFlightCap(t *testing.T) {
	cases := []struct {
		name      string
		cfg       Config
		wantConns int
	}{
		{"defaults", Config{}, gateway.DefaultMaxInFlight},
		{"--max-inflight", Config{Gateway: gateway.Config{MaxInFlight: 100}}, 100},
		{"set explicitly", Config{Gateway: gateway.Config{MaxInFlight: 100}, Upstream: upstream.Config{MaxIdleConns: 7}}, 7},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.cfg.withDefaults().Upstream.MaxIdleConns; got != c.wantConns {
				t.Errorf("got %d idle upstream connections, want %d", got, c.wantConns)
			}
		})
	}
}
