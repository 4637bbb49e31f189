package podcidr

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// cluster is a lister over a changeable set of real nodes, counting its calls.
type cluster struct {
	nodes []corev1.Node
	err   error
	calls int
}

func (c *cluster) list(context.Context) ([]corev1.Node, error) {
	c.calls++
	return c.nodes, c.err
}

func TestReserverRefreshAndStale(t *testing.T) {
	k3s := &cluster{nodes: []corev1.Node{node("server-1", `["server"]`, "10.42.0.0/24")}}
	now := time.Unix(1e9, 0)
	var logs bytes.Buffer
	r, err := New(Config{RealNodes: k3s.list, Now: func() time.Time { return now },
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name      string
		advance   time.Duration
		change    func()
		want      string
		wantCalls int
	}{
		{"first create lists", 0, nil, "10.42.255.0/24", 1},
		{"reused within a minute", 59 * time.Second, nil, "10.42.255.0/24", 1},
		{"listed again after a minute", 2 * time.Second, nil, "10.42.255.0/24", 2},
		{"a failed listing keeps a recent block", time.Minute, func() { k3s.err = errors.New("connection refused") }, "10.42.255.0/24", 3},
		{"but not a block older than 10 minutes", 10 * time.Minute, nil, "", 4},
		{"listing again names it again", time.Minute, func() { k3s.err = nil }, "10.42.255.0/24", 5},
		{"a real node that took the block stops it", time.Minute, func() {
			k3s.nodes = append(k3s.nodes, node("worker-9", "", "10.42.255.0/24"))
		}, "", 6},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		if s.change != nil {
			s.change()
		}
		d := r.Decide(t.Context())
		if got := strings.Join(d.Strings(), ","); got != s.want || k3s.calls != s.wantCalls {
			t.Errorf("%s: got %q after %d listings (%s), want %q after %d", s.name, got, k3s.calls, d.Why, s.want, s.wantCalls)
		}
	}
	// One line per change: named, none (listing failed), named, none (worker-9).
	if got := strings.Count(logs.String(), "\n"); got != 4 {
		t.Errorf("got %d log lines, want 4 (one per change):\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), "worker-9") {
		t.Errorf("got logs %s, want the reason naming worker-9", logs.String())
	}
}

func TestNewValidates(t *testing.T) {
	lister := (&cluster{}).list
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no lister", Config{}, "a node lister is required"},
		{"off needs no lister", Config{Settings: Settings{Off: true}}, ""},
		{"off with a block", Config{Settings: Settings{Off: true, Block: prefixes("10.42.255.0/24")}}, "turned off, yet given"},
		{"negative refresh", Config{RealNodes: lister, Refresh: -1}, "refresh -1ns is negative"},
		{"bad mask", Config{RealNodes: lister, Settings: Settings{NodeMaskV4: 129}}, "mask size 129"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if tt.want == "" {
				if err != nil {
					t.Errorf("got %v, want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
