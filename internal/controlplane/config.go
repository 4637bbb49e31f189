package controlplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Config describes a control plane to start. Its zero value starts etcd and kube-apiserver from
// the project's bin folder in a fresh temporary folder.
type Config struct {
	// BinDir is the folder holding etcd, kube-apiserver, kube-scheduler and
	// kube-controller-manager. Default: $PICOGATE_BIN, else the bin folder beside the go.mod
	// found walking up from the working directory.
	BinDir string

	// Dir is the working folder for PKI, etcd data, kubeconfigs and logs. Default: a new
	// temporary folder, which Stop removes. A Dir given here is kept; etcd data left in it by an
	// earlier run is reused, the PKI is made anew on every Start.
	Dir string

	// Scheduler also runs kube-scheduler, so pods get bound to nodes.
	Scheduler bool

	// ControllerManager also runs kube-controller-manager: Deployments create pods, the node
	// lifecycle controller marks a node NotReady when its Lease lapses, and the default
	// ServiceAccount exists in every namespace (Start waits for it in "default").
	ControllerManager bool

	// NodeMonitorGracePeriod is kube-controller-manager's --node-monitor-grace-period: how long
	// a node may go without a Lease or status renewal before it is marked NotReady. Default 50s,
	// k3s's and Kubernetes' own since 1.32; a test that waits for a node to go NotReady sets a
	// shorter one and says so.
	NodeMonitorGracePeriod time.Duration

	// NodeIPAM runs kube-controller-manager with node IPAM on, as k3s always does
	// (--allocate-node-cidrs=true): the range allocator gives every Node without one a
	// spec.podCIDR of NodeCIDRMaskSize bits from ClusterCIDR, and occupies the podCIDRs that
	// Nodes already name, exiting at start when one of them is outside ClusterCIDR.
	NodeIPAM bool

	// ClusterCIDR is kube-controller-manager's --cluster-cidr when NodeIPAM is on: the IPv4
	// network node CIDRs are carved from. Default 10.42.0.0/16, k3s's. A test that wants the allocator to run out sets a small one
	// (a /22 holds four /24 node CIDRs) and says so.
	ClusterCIDR string

	// NodeCIDRMaskSize is kube-controller-manager's --node-cidr-mask-size when NodeIPAM is on:
	// the prefix length of each Node's pod CIDR. Default 24, k3s's (and upstream's for IPv4).
	NodeCIDRMaskSize int

	// StartTimeout bounds how long each process may take to become healthy. Default 90s, generous
	// because several control planes may start at once on two cores.
	StartTimeout time.Duration

	// Durable makes etcd fsync its writes. Off by default: tests throw their data away, and
	// fsync makes etcd many times slower on slow disks.
	Durable bool

	// APIServerArgs are extra kube-apiserver flags ("--name=value"), appended after the built-in
	// ones, so a later flag overrides an earlier one where kube-apiserver allows that.
	APIServerArgs []string

	// Logger receives progress and process-exit messages. Default: discard.
	Logger *slog.Logger
}

// Component names, as used for binaries and log files (see ControlPlane.LogFile).
const (
	Etcd              = "etcd"
	APIServer         = "kube-apiserver"
	Scheduler         = "kube-scheduler"
	ControllerManager = "kube-controller-manager"
)

// ErrMissingBinary is wrapped by Start's error when a needed binary is not in BinDir.
var ErrMissingBinary = errors.New("missing control plane binary")

// Defaults that follow k3s, so the local controller manager behaves as on a k3s server.
const (
	defaultNodeMonitorGracePeriod = 50 * time.Second
	defaultStartTimeout           = 90 * time.Second
	// DefaultClusterCIDR is k3s's --cluster-cidr.
	DefaultClusterCIDR = "10.42.0.0/16"
	// DefaultNodeCIDRMaskSize is k3s's (and upstream kube-controller-manager's IPv4)
	// --node-cidr-mask-size.
	DefaultNodeCIDRMaskSize = 24
)

// withDefaults returns cfg with every unset field given its documented default. It does not
// create Dir: that is Start's job, so a failed validation leaves nothing behind.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.BinDir == "" {
		dir, err := defaultBinDir()
		if err != nil {
			return cfg, err
		}
		cfg.BinDir = dir
	}
	if cfg.NodeMonitorGracePeriod == 0 {
		cfg.NodeMonitorGracePeriod = defaultNodeMonitorGracePeriod
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = defaultStartTimeout
	}
	if cfg.NodeIPAM && cfg.ClusterCIDR == "" {
		cfg.ClusterCIDR = DefaultClusterCIDR
	}
	if cfg.NodeIPAM && cfg.NodeCIDRMaskSize == 0 {
		cfg.NodeCIDRMaskSize = DefaultNodeCIDRMaskSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// validate reports every problem with a defaulted cfg at once.
func (cfg Config) validate() error {
	var errs []error
	if cfg.NodeMonitorGracePeriod < 0 {
		errs = append(errs, fmt.Errorf("node monitor grace period %s is negative", cfg.NodeMonitorGracePeriod))
	}
	if cfg.StartTimeout < 0 {
		errs = append(errs, fmt.Errorf("start timeout %s is negative", cfg.StartTimeout))
	}
	errs = append(errs, cfg.validateIPAM()...)
	for _, name := range cfg.binaries() {
		path := filepath.Join(cfg.BinDir, name)
		if fi, err := os.Stat(path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("%w: %s not found in %s: run `make controlplane`", ErrMissingBinary, name, cfg.BinDir))
		}
	}
	return errors.Join(errs...)
}

// validateIPAM checks the node IPAM settings the way kube-controller-manager would, so a bad one
// fails Start with a clear error instead of a controller manager that exits once started.
func (cfg Config) validateIPAM() []error {
	if !cfg.NodeIPAM {
		if cfg.ClusterCIDR != "" || cfg.NodeCIDRMaskSize != 0 {
			return []error{errors.New("a cluster CIDR or node CIDR mask size needs NodeIPAM")}
		}
		return nil
	}
	var errs []error
	if !cfg.ControllerManager {
		errs = append(errs, errors.New("node IPAM needs the controller manager"))
	}
	p, err := netip.ParsePrefix(cfg.ClusterCIDR)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("cluster CIDR: %w", err))
	case !p.Addr().Is4() || p != p.Masked():
		errs = append(errs, fmt.Errorf("cluster CIDR %s: want one IPv4 network address (the local control plane is IPv4 only)", cfg.ClusterCIDR))
	case cfg.NodeCIDRMaskSize <= p.Bits() || cfg.NodeCIDRMaskSize > 32:
		errs = append(errs, fmt.Errorf("node CIDR mask size %d: want more than the cluster CIDR's %d bits and at most 32", cfg.NodeCIDRMaskSize, p.Bits()))
	}
	return errs
}

// binaries lists the programs cfg needs.
func (cfg Config) binaries() []string {
	names := []string{Etcd, APIServer}
	if cfg.Scheduler {
		names = append(names, Scheduler)
	}
	if cfg.ControllerManager {
		names = append(names, ControllerManager)
	}
	return names
}

// defaultBinDir is $PICOGATE_BIN, else <module root>/bin, the module root being the first folder
// holding a go.mod on the way up from the working directory (tests run in their package's folder).
func defaultBinDir() (string, error) {
	if dir := os.Getenv("PICOGATE_BIN"); dir != "" {
		return filepath.Abs(dir)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the bin folder: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "bin"), nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("finding the bin folder: no go.mod above %s; set PICOGATE_BIN or Config.BinDir", wd)
		}
	}
}
