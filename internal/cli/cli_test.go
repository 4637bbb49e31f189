package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Exit codes: 2 for a command line to change, 1 for anything else that fails, one line on stderr.
func TestMainExitCodes(t *testing.T) {
	const noKubeconfig = "--kubeconfig=/nonexistent/kubeconfig"
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string // a substring of the one line; "" for an empty stderr
	}{
		{"help", []string{"--help"}, 0, ""},
		{"no command", nil, 0, ""},
		{"group without subcommand", []string{"device"}, 0, ""},
		{"version", []string{"version"}, 0, ""},
		{"unknown command", []string{"frob"}, 2, `unknown command "frob" for "picogate"`},
		{"unknown command with a suggestion", []string{"tokn"}, 2, `did you mean "token"?`},
		{"unknown subcommand", []string{"device", "frob"}, 2, `unknown command "frob" for "picogate device"`},
		{"unknown subcommand of completion", []string{"completion", "frob"}, 2, `unknown command "frob"`},
		{"unknown flag", []string{"version", "--bogus"}, 2, "unknown flag: --bogus"},
		{"unknown shorthand flag", []string{"version", "-Z"}, 2, "unknown shorthand flag"},
		{"bad flag value", []string{"device", "add", "--count", "x"}, 2, `invalid argument "x"`},
		{"flag without value", []string{"device", "list", "--namespace"}, 2, "flag needs an argument"},
		{"extra argument", []string{"serve", "extra"}, 2, "expected no arguments, got 1 argument(s)"},
		{"missing argument", []string{"token", "revoke"}, 2, "expected one token ID"},
		{"extra argument to completion", []string{"completion", "bash", "x"}, 2, `unknown command "x"`},
		{"bad output format", []string{"device", "list", "-o", "yaml"}, 2, `-o "yaml"`},
		{"bad log level", []string{"serve", "--log-level", "loud"}, 2, `--log-level "loud"`},
		{"name and count", []string{"device", "add"}, 2, "give one device NAME"},
		// Failures that are not the command line's fault, even when their text says "flag" or "unknown".
		{"unreadable kubeconfig", []string{"device", "list", noKubeconfig}, 1, "reading kubeconfig"},
		{"unreadable kubeconfig named like a flag", []string{"device", "list", "--kubeconfig=/nonexistent/flag/arg(s)"}, 1, "reading kubeconfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("picogate %s: got exit code %d, want %d (stderr %q)", strings.Join(tc.args, " "), code, tc.code, stderr.String())
			}
			switch got := stderr.String(); {
			case tc.stderr == "" && got != "":
				t.Errorf("stderr: got %q, want nothing", got)
			case tc.stderr != "" && (!strings.Contains(got, tc.stderr) || strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, "picogate: ")):
				t.Errorf("stderr: got %q, want one line \"picogate: …\" containing %q", got, tc.stderr)
			}
		})
	}
}
