package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/picogate/picogate/internal/setup"
)

// setupTLSFlags registers `picogate setup --tls` and its flags.
func setupTLSFlags(cmd *cobra.Command, on *bool, cfg *setup.TLSConfig) {
	f := cmd.Flags()
	f.BoolVar(on, "tls", false, "instead of the credential, issue the TLS device port's certificate (serve --tls-listen): a CA on first use, kept after, and a new ECDSA P-256 leaf signed by it; touches no cluster")
	f.StringSliceVar(&cfg.SANs, "tls-san", nil, "with --tls: a DNS name or IP address boards connect to, repeatable (at least one; mbedtls 2.x checks DNS names only)")
	f.StringVar(&cfg.Dir, "tls-dir", setup.DefaultTLSDir, "with --tls: where tls.crt, tls.key and ticket.key go")
	f.StringVar(&cfg.CADir, "tls-ca-dir", "", "with --tls: where the CA (ca.crt, ca.key) is kept or created (default --tls-dir); keep ca.key off the gateway's machine")
	f.DurationVar(&cfg.Validity, "tls-validity", 2*365*24*time.Hour, "with --tls: the leaf certificate's lifetime")
}

// setupTLSConflicts refuses flags of the other mode: with --tls setup writes no credential, and the
// --tls-* flags mean nothing without --tls.
func setupTLSConflicts(cmd *cobra.Command, on bool) error {
	credential := []string{"output", "token-ttl", "shared-identity"}
	tls := []string{"tls-san", "tls-dir", "tls-ca-dir", "tls-validity"}
	check, other := credential, "--tls issues the TLS port's certificate only; run setup without --tls for the credential"
	if !on {
		check, other = tls, "set --tls to issue the TLS port's certificate"
	}
	for _, name := range check {
		if cmd.Flags().Changed(name) {
			return fmt.Errorf("--%s: %s", name, other)
		}
	}
	return nil
}

func runSetupTLS(g *globals, cfg setup.TLSConfig) error {
	res, err := setup.IssueTLS(cfg)
	if err != nil {
		return err
	}
	w := g.stdout
	if res.CACreated {
		fmt.Fprintf(w, "created CA %s (key %s), valid until %s\n", res.CACert, res.CAKey, res.CANotAfter.UTC().Format(time.DateOnly))
		fmt.Fprintf(w, "boards pin this CA: build %s into the firmware (SHA-256 fingerprint %s)\n", res.CACert, setup.FormatFingerprint(res.CAFingerprint))
	} else {
		fmt.Fprintf(w, "kept CA %s (SHA-256 fingerprint %s): boards that pin it trust the new certificate\n", res.CACert, setup.FormatFingerprint(res.CAFingerprint))
	}
	fmt.Fprintf(w, "wrote %s and %s for %v, valid until %s\n", res.Cert, res.Key, res.SANs, res.NotAfter.UTC().Format(time.DateOnly))
	if res.TicketKeyCreated {
		fmt.Fprintf(w, "wrote %s (for --tls-ticket-key-file when several replicas share boards)\n", res.TicketKey)
	}
	fmt.Fprintf(w, "serve with: picogate serve --tls-listen :6084 --tls-cert %s --tls-key %s; a running gateway picks a new certificate up within 10s\n", res.Cert, res.Key)
	return nil
}
