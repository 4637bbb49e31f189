package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/picogate/picogate/internal/setup"
	"github.com/picogate/picogate/internal/upstream"
)

func newSetup(g *globals) *cobra.Command {
	cfg := setup.Config{}
	var withTLS bool
	var tlsCfg setup.TLSConfig
	cmd := &cobra.Command{
		Use:   "setup",
		Short: "Give the gateway its own least-privilege credential: apply its RBAC and write a kubeconfig for it",
		Long: "setup uses your (admin) kubeconfig once to apply the gateway's RBAC (deploy/rbac.yaml, built in),\n" +
			"requests a token for the gateway's ServiceAccount and writes a kubeconfig for it: FILE, FILE.token and\n" +
			"FILE.ca.crt, each mode 0600, replaced atomically. `picogate serve --kubeconfig FILE` then runs without\n" +
			"the admin credential. Run it again to renew the token: a running gateway picks the new token file up\n" +
			"within a minute, without a restart (deploy/systemd/picogate-setup.timer does this monthly).\n\n" +
			"setup --tls instead issues the TLS device port's certificate (docs/tls.md): a CA the firmware pins,\n" +
			"created once and kept, and a new leaf signed by it for the --tls-san names.",
		Example: "  sudo picogate setup --kubeconfig /etc/rancher/k3s/k3s.yaml --output /etc/picogate/kubeconfig --owner picogate\n" +
			"  sudo picogate setup --tls --tls-san picogate.lan --tls-san 192.168.1.10 --owner picogate",
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := setupTLSConflicts(cmd, withTLS); err != nil {
				return usageError{err}
			}
			if withTLS {
				tlsCfg.Owner = cfg.Owner
				return runSetupTLS(g, tlsCfg)
			}
			rc, source, err := upstream.LoadREST(g.kubeconfig, g.context)
			if err != nil {
				return err
			}
			cfg.Admin, cfg.Namespace = rc, g.namespace
			s, err := setup.New(cfg)
			if err != nil {
				return usageError{err}
			}
			res, err := s.Run(cmd.Context())
			if err != nil {
				return fmt.Errorf("setup with %s: %w", source, err)
			}
			printSetup(g, res)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Output, "output", setup.DefaultOutput, "kubeconfig to write; the token and CA go to FILE.token and FILE.ca.crt")
	f.DurationVar(&cfg.TokenTTL, "token-ttl", setup.DefaultTokenTTL, "token lifetime to request (at least 10m; the API server may grant less)")
	f.StringVar(&cfg.Owner, "owner", "", "USER or USER:GROUP to own the written files, e.g. picogate for the systemd unit (needs root)")
	f.BoolVar(&cfg.SharedIdentity, "shared-identity", false, "also apply deploy/rbac-shared.yaml, for serve --shared-identity: boards without a credential act as the restricted identity picogate:shared")
	setupTLSFlags(cmd, &withTLS, &tlsCfg)
	return cmd
}

func printSetup(g *globals, res *setup.Result) {
	w := g.stdout
	for _, a := range res.Applied {
		fmt.Fprintf(w, "applied %s\n", a)
	}
	left := time.Until(res.Expires).Round(time.Minute)
	fmt.Fprintf(w, "token for %s valid until %s (%s)\n", res.Username, res.Expires.UTC().Format(time.RFC3339), left)
	if res.Requested-left > time.Hour {
		fmt.Fprintf(w, "note: %s was asked for; the API server caps token lifetimes (--service-account-max-token-expiration): renew before it ends\n", res.Requested)
	}
	fmt.Fprintf(w, "wrote %s (token %s, CA %s)\n", res.Kubeconfig, res.TokenFile, res.CAFile)
	shared := ""
	if res.SharedIdentity {
		shared = " --shared-identity"
	}
	fmt.Fprintf(w, "run the gateway with: picogate serve --kubeconfig %s%s; run setup again to renew the token\n", res.Kubeconfig, shared)
}
