// Package cli is picogate's command line: `serve`, `device`, `token`, `setup`, `version`. Commands parse flags into the
// components' Config structs and call them; no logic of their own beyond presenting results.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/picogate/picogate/internal/registry"
	"github.com/picogate/picogate/internal/upstream"
)

// Main runs the command line and returns the process exit code: 0, 1 for a failure, 2 for a usage error.
// Errors are printed as one line on stderr.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "picogate: "+oneLine(err))
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}

// usageError marks a command line the user must change (a bad flag, argument or subcommand): exit
// code 2. Commands wrap their own checks in it; typeUsageErrors wraps the checks cobra makes.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// typeUsageErrors makes the usage errors cobra reports itself usageErrors, for c and every command
// under it: a bad argument count, and an unknown subcommand of a command group (cobra checks that
// only at the root, and a group without a Run of its own would print its help and exit 0). Flag
// errors are wrapped by the root's SetFlagErrorFunc.
func typeUsageErrors(c *cobra.Command) {
	if c.HasSubCommands() {
		c.SuggestionsMinimumDistance = 2
		c.Args = func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			err := fmt.Errorf("unknown command %q for %q", args[0], c.CommandPath())
			if s := c.SuggestionsFor(args[0]); len(s) > 0 {
				err = fmt.Errorf("%w (did you mean %q?)", err, s[0])
			}
			return usageError{err}
		}
		if !c.Runnable() {
			c.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
		}
	} else if check := c.Args; check != nil {
		c.Args = func(c *cobra.Command, args []string) error {
			err := check(c, args)
			if err == nil || errors.As(err, new(usageError)) {
				return err
			}
			return usageError{err}
		}
	}
	for _, sub := range c.Commands() {
		typeUsageErrors(sub)
	}
}

// oneLine flattens joined errors ("a\nb") into "a; b".
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " ; ")), " ")
}

// globals are the flags every command shares.
type globals struct {
	kubeconfig, context, namespace string
	logFormat, logLevel            string
	stdout, stderr                 io.Writer
	logw                           io.Writer // stderr for log lines (logWriter)
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "picogate",
		Short:         "A gateway that makes microcontrollers first-class Kubernetes nodes",
		Long:          "picogate forwards plain-HTTP requests from microcontrollers to the Kubernetes API over TLS,\neach device as its own least-privilege node.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, else "+upstream.K3sKubeconfig+" if readable, else in-cluster)")
	pf.StringVar(&g.context, "context", "", "kubeconfig context (default: its current context)")
	pf.StringVar(&g.namespace, "namespace", registry.DefaultNamespace, "namespace of the device records")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newServe(g), newDevice(g), newToken(g), newVersion(g), newSetup(g))
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	typeUsageErrors(root)
	return root
}

// logWriter is stderr for log lines, one Write at a time: the logger and the gateway's access log
// (which formats its lines itself) share it.
func (g *globals) logWriter() io.Writer {
	if g.logw == nil {
		g.logw = &lockedWriter{w: g.stderr}
	}
	return g.logw
}

// lockedWriter serializes Writes to w, so whole lines from several writers never interleave.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (g *globals) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch g.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(g.logWriter(), opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.logWriter(), opts)), nil
	default:
		return nil, usageError{fmt.Errorf("--log-format %q: want text or json", g.logFormat)}
	}
}

func (g *globals) client() (kubernetes.Interface, error) {
	rc, _, err := upstream.LoadREST(g.kubeconfig, g.context)
	if err != nil {
		return nil, err
	}
	// client-go's default 5 requests/s makes `device add --count 1000` take minutes.
	rc.QPS, rc.Burst = 50, 100
	return kubernetes.NewForConfig(rc)
}

// exactArgs is cobra.ExactArgs with picogate's one-line usage errors.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("expected %s, got %d argument(s)", what, len(args))}
		}
		return nil
	}
}
