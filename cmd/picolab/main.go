// Command picolab runs a local Kubernetes control plane (etcd, kube-apiserver, kube-scheduler,
// kube-controller-manager from ./bin) for picogate's demo:
//
//	picolab up --dir DIR [--scheduler=true] [--controller-manager=true]
//
// It prints "kubeconfig=DIR/admin.kubeconfig url=https://127.0.0.1:PORT" once the API server is
// ready and runs until SIGINT or SIGTERM. DIR (PKI, etcd data, logs) is kept.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/picogate/picogate/internal/controlplane"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "picolab:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 || args[0] != "up" {
		return fmt.Errorf("usage: picolab up --dir DIR [--scheduler=true] [--controller-manager=true]")
	}
	fs := flag.NewFlagSet("picolab up", flag.ContinueOnError)
	cfg := controlplane.Config{Durable: true}
	fs.StringVar(&cfg.Dir, "dir", "", "working folder for PKI, etcd data, kubeconfigs and logs (kept; required)")
	fs.StringVar(&cfg.BinDir, "bin", "", "folder with the control plane binaries (default $PICOGATE_BIN, else ./bin of the module)")
	fs.BoolVar(&cfg.Scheduler, "scheduler", true, "run kube-scheduler")
	fs.BoolVar(&cfg.ControllerManager, "controller-manager", true, "run kube-controller-manager")
	fs.DurationVar(&cfg.NodeMonitorGracePeriod, "node-monitor-grace-period", 0, "time before a silent node is NotReady (default 50s, as k3s)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if cfg.Dir == "" {
		return fmt.Errorf("up: --dir is required")
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return controlplane.Up(ctx, cfg, func(c *controlplane.ControlPlane) error {
		_, err := fmt.Printf("kubeconfig=%s url=%s\n", c.AdminKubeconfig(), c.URL())
		return err
	})
}
