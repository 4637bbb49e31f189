package controlplane

import (
	"errors"
	"fmt"
	"log/slog"
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
	// a node may go without a Lease or status renewal before it is marked NotReady. Default 20s;
	// Kubernetes' own 50s makes tests slow.
	NodeMonitorGracePeriod time.Duration

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

const (
	defaultNodeMonitorGracePeriod = 20 * time.Second
	defaultStartTimeout           = 90 * time.Second
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
	for _, name := range cfg.binaries() {
		path := filepath.Join(cfg.BinDir, name)
		if fi, err := os.Stat(path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("%w: %s not found in %s: run `make controlplane`", ErrMissingBinary, name, cfg.BinDir))
		}
	}
	return errors.Join(errs...)
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
