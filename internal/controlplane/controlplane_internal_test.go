package controlplane

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// prepared is a control plane with its folder, PKI and ports, but no process yet.
func prepared(t *testing.T) *ControlPlane {
	t.Helper()
	cfg, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	c, err := prepare(t.Context(), cfg)
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping control plane: %v", err)
		}
	})
	return c
}

// occupy holds 127.0.0.1:port until the test ends, as a racing process would.
func occupy(t *testing.T, port int) {
	t.Helper()
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("occupying port %d: %v", port, err)
	}
	t.Cleanup(func() { l.Close() })
}

func TestLaunchRetriesOnTakenPort(t *testing.T) {
	c := prepared(t)
	ctx := t.Context()

	takenEtcd := c.etcdPort
	occupy(t, takenEtcd)
	if err := c.launch(ctx, Etcd, c.etcdArgs, c.etcdHealthy, c.repickEtcd); err != nil {
		t.Fatalf("launching etcd on a taken port with a retry: %v", err)
	}
	if c.etcdPort == takenEtcd {
		t.Errorf("got etcd still on taken port %d, want a new one", takenEtcd)
	}

	takenAPI := c.apiPort
	occupy(t, takenAPI)
	err := c.launch(ctx, APIServer, c.apiServerArgs, c.apiServerReady, nil)
	if !errors.Is(err, errAddrInUse) {
		t.Fatalf("launching kube-apiserver on a taken port without a retry: got %v, want errAddrInUse", err)
	}
	if !strings.Contains(err.Error(), "kube-apiserver exited") || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("got error %q, want it to name kube-apiserver and carry its log", err)
	}
	if err := c.launch(ctx, APIServer, c.apiServerArgs, c.apiServerReady, c.repickAPIServer); err != nil {
		t.Fatalf("launching kube-apiserver on a taken port with a retry: %v", err)
	}
	if c.apiPort == takenAPI {
		t.Errorf("got kube-apiserver still on taken port %d, want a new one", takenAPI)
	}
}

func TestStopLeavesNoProcess(t *testing.T) {
	c := prepared(t)
	if err := c.boot(t.Context()); err != nil {
		t.Fatalf("boot: %v", err)
	}
	c.mu.Lock()
	pids := map[string]int{}
	for name, p := range c.procs {
		pids[name] = p.cmd.Process.Pid
	}
	c.mu.Unlock()
	if len(pids) != 2 {
		t.Fatalf("got processes %v, want etcd and kube-apiserver", pids)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for name, pid := range pids {
		// Killing the group proves every member is gone, not only its leader.
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s process group %d after Stop: got %v, want ESRCH", name, pid, err)
		}
	}
	if _, err := os.Stat(c.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("working folder after Stop: got %v, want it removed", err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: got %v, want nil", err)
	}
}

func TestConfigValidate(t *testing.T) {
	bin := t.TempDir()
	for _, name := range []string{Etcd, APIServer} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	withCM := t.TempDir()
	for _, name := range []string{Etcd, APIServer, ControllerManager} {
		if err := os.WriteFile(filepath.Join(withCM, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		cfg  Config
		want []string // parts of the error; none means valid
	}{
		{"defaults", Config{BinDir: bin}, nil},
		{"negative durations", Config{BinDir: bin, NodeMonitorGracePeriod: -1, StartTimeout: -1},
			[]string{"node monitor grace period -1ns is negative", "start timeout -1ns is negative"}},
		{"missing components", Config{BinDir: bin, Scheduler: true, ControllerManager: true},
			[]string{"kube-scheduler not found in " + bin, "kube-controller-manager not found in " + bin}},
		{"node IPAM with k3s's defaults", Config{BinDir: withCM, ControllerManager: true, NodeIPAM: true}, nil},
		{"node IPAM with a small cluster CIDR", Config{BinDir: withCM, ControllerManager: true, NodeIPAM: true, ClusterCIDR: "10.42.0.0/22"}, nil},
		{"node IPAM without the controller manager", Config{BinDir: bin, NodeIPAM: true},
			[]string{"node IPAM needs the controller manager"}},
		{"cluster CIDR without node IPAM", Config{BinDir: bin, ClusterCIDR: "10.42.0.0/16"},
			[]string{"needs NodeIPAM"}},
		{"cluster CIDR not a network address", Config{BinDir: withCM, ControllerManager: true, NodeIPAM: true, ClusterCIDR: "10.42.0.1/16"},
			[]string{"want one IPv4 network address"}},
		{"IPv6 cluster CIDR", Config{BinDir: withCM, ControllerManager: true, NodeIPAM: true, ClusterCIDR: "fd00:42::/56"},
			[]string{"want one IPv4 network address"}},
		{"node mask no longer than the cluster's", Config{BinDir: withCM, ControllerManager: true, NodeIPAM: true, ClusterCIDR: "10.42.0.0/24"},
			[]string{"node CIDR mask size 24: want more than the cluster CIDR's 24 bits"}},
		{"unparsable cluster CIDR", Config{BinDir: withCM, ControllerManager: true, NodeIPAM: true, ClusterCIDR: "10.42.0.0"},
			[]string{"cluster CIDR: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := tt.cfg.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestDefaultBinDir(t *testing.T) {
	t.Run("PICOGATE_BIN wins", func(t *testing.T) {
		dir := t.TempDir()
		t.Setenv("PICOGATE_BIN", dir)
		got, err := defaultBinDir()
		if err != nil || got != dir {
			t.Errorf("got %q, %v, want %q", got, err, dir)
		}
	})
	t.Run("beside go.mod", func(t *testing.T) {
		t.Setenv("PICOGATE_BIN", "")
		root := t.TempDir()
		deep := filepath.Join(root, "a", "b")
		if err := os.MkdirAll(deep, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Chdir(deep)
		got, err := defaultBinDir()
		want := filepath.Join(root, "bin")
		if err != nil || got != want {
			t.Errorf("got %q, %v, want %q", got, err, want)
		}
	})
}

func TestTailFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content string
		n             int
		want          string
	}{
		{"shorter than n", "a\nb\n", 5, "a\nb"},
		{"longer than n", "a\nb\nc\nd\n", 2, "c\nd"},
		{"no final newline", "a\nb\nc", 2, "b\nc"},
		{"empty", "", 3, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := tailFile(path, tt.n); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("long file keeps only the end", func(t *testing.T) {
		var b strings.Builder
		for i := range 100000 {
			fmt.Fprintf(&b, "line %d\n", i)
		}
		path := filepath.Join(dir, "long")
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, want := tailFile(path, 2), "line 99998\nline 99999"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		if got := tailFile(filepath.Join(dir, "nope"), 3); !strings.HasPrefix(got, "(no log:") {
			t.Errorf("got %q, want a (no log: ...) note", got)
		}
	})
}

func TestFailedChecks(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"readyz", "[+]ping ok\n[-]etcd failed: reason withheld\n[+]log ok\n[-]poststarthook/rbac/bootstrap-roles failed: reason withheld\nreadyz check failed\n",
			"[-]etcd failed: reason withheld; [-]poststarthook/rbac/bootstrap-roles failed: reason withheld"},
		{"other", "Unauthorized\nmore\n", "Unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := failedChecks(tt.body); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFreePortsDistinct(t *testing.T) {
	ports, err := freePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Errorf("got ports %v, want 5 distinct positive ones", ports)
		}
		seen[p] = true
	}
}

func TestControllerManagerArgsFollowK3s(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		want    []string
		notWant []string
	}{
		{"defaults", Config{ControllerManager: true},
			[]string{"--node-monitor-grace-period=50s"}, []string{"--allocate-node-cidrs=true"}},
		{"node IPAM as k3s runs it", Config{ControllerManager: true, NodeIPAM: true},
			[]string{"--allocate-node-cidrs=true", "--cluster-cidr=10.42.0.0/16", "--node-cidr-mask-size=24", "--node-monitor-grace-period=50s"}, nil},
		{"a test's small cluster CIDR and short grace period", Config{ControllerManager: true, NodeIPAM: true, ClusterCIDR: "10.42.0.0/22", NodeMonitorGracePeriod: 10e9},
			[]string{"--cluster-cidr=10.42.0.0/22", "--node-monitor-grace-period=10s"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := tt.cfg.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			c := &ControlPlane{cfg: cfg, pki: &pki{}}
			args := strings.Join(c.controllerManagerArgs(), " ")
			for _, w := range tt.want {
				if !strings.Contains(args, w) {
					t.Errorf("got args %s, want %s among them", args, w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(args, w) {
					t.Errorf("got args %s, want no %s", args, w)
				}
			}
		})
	}
}
