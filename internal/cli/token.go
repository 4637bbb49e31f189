package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/picogate/picogate/internal/enroll"
	"github.com/picogate/picogate/internal/registry"
)

func newToken(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Enrollment tokens: short-lived secrets devices exchange for their own credential",
		Long: "An enrollment token lets devices register themselves (POST /picogate/v1/enroll on a gateway\n" +
			"started with --enrollment) and receive their own credential, once. Tokens expire, may be limited\n" +
			"to N enrollments, enroll only names with their prefix, and may require an operator's approval.\n" +
			"hmac-mode boards agree their key with the gateway's public key, which they pin: token create\n" +
			"and token gateway-key print it.",
	}
	cmd.AddCommand(newTokenCreate(g), newTokenList(g), newTokenRevoke(g), newTokenGatewayKey(g))
	return cmd
}

// tokenJSON is what `token create -o json` prints.
type tokenJSON struct {
	Token string `json:"token"`
	*enroll.TokenInfo
	// GatewayKey is the gateway's X25519 public key (64 hex digits) hmac firmware pins.
	GatewayKey string `json:"gatewayKey"`
}

func newTokenCreate(g *globals) *cobra.Command {
	var spec enroll.TokenSpec
	var approve, output string
	cmd := &cobra.Command{
		Use:     "create",
		Short:   "Create an enrollment token and print it once",
		Example: "  picogate token create --ttl 1h --uses 10 --prefix pico-\n  picogate token create --approve manual -o json",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			spec.Approve = enroll.Approve(approve)
			if err := spec.Validate(); err != nil {
				return usageError{err}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			gk, err := enroll.EnsureGatewayKey(cmd.Context(), c, g.namespace)
			if err != nil {
				return err
			}
			tok, info, err := enroll.NewTokens(c, g.namespace).Create(cmd.Context(), spec)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(g.stdout, tokenJSON{Token: tok.Reveal(), TokenInfo: info, GatewayKey: gk.PublicHex()})
			}
			uses := "any number of devices"
			if info.Uses > 0 {
				uses = fmt.Sprintf("%d device(s)", info.Uses)
			}
			fmt.Fprintf(g.stdout, "enrollment token %s created: enrolls %s until %s, names %s, approval %s\n",
				info.ID, uses, info.Expires.UTC().Format(time.RFC3339), prefixText(info.Prefix), info.Approve)
			fmt.Fprintf(g.stdout, "token (shown once): %s\n", tok.Reveal())
			fmt.Fprintf(g.stdout, "gateway key (hmac firmware pins it; not a secret): %s\n", gk.PublicHex())
			fmt.Fprintf(g.stdout, "a board enrolls on a gateway started with --enrollment: POST http://GATEWAY:6080/picogate/v1/enroll\n"+
				"  {\"token\":\"%s\",\"name\":\"%sNAME\",\"hardwareId\":\"ID\",\"auth\":\"hmac\",\"ephemeralKey\":\"<its X25519 public key>\"}\n"+
				"  (key agreement: docs/device-protocol.md; \"auth\":\"token\" needs no ephemeralKey)\n", tok.Reveal(), info.Prefix)
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&spec.TTL, "ttl", time.Hour, "how long the token can be used")
	f.IntVar(&spec.Uses, "uses", 1, "how many enrollments it allows (0: any number until it expires)")
	f.StringVar(&spec.Prefix, "prefix", "pico-", "device names it may enroll start with this (required: it keeps them apart from real nodes' names)")
	f.StringVar(&approve, "approve", "auto", "auto: devices get their credential at once; manual: each waits for `picogate device approve NAME`")
	f.StringVarP(&output, "output", "o", "", "output format: json")
	return cmd
}

func prefixText(p string) string {
	if p == "" {
		return "none (refused at enrollment: revoke it)"
	}
	return "starting with " + p
}

func newTokenGatewayKey(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "gateway-key",
		Short: "Print the gateway's public key, which hmac firmware pins (created if no gateway has yet)",
		Long: "hmac-mode boards agree their key with the gateway (X25519), and pin the gateway's public key so\n" +
			"that nobody in the middle can pose as it. It is not a secret. Every gateway replica reads the one\n" +
			"key pair in the Secret picogate-gateway-key; this prints its public half, creating it if missing.",
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			gk, err := enroll.EnsureGatewayKey(cmd.Context(), c, g.namespace)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(g.stdout, struct {
					GatewayKey string `json:"gatewayKey"`
				}{gk.PublicHex()})
			}
			fmt.Fprintln(g.stdout, gk.PublicHex())
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json")
	return cmd
}

func newTokenList(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List enrollment tokens (expired ones until the gateway deletes them)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			infos, err := enroll.NewTokens(c, g.namespace).List(cmd.Context())
			if err != nil {
				return err
			}
			now := time.Now()
			if output == "json" {
				type row struct {
					*enroll.TokenInfo
					State string `json:"state"`
				}
				rows := make([]row, 0, len(infos))
				for _, t := range infos {
					rows = append(rows, row{t, t.State(now)})
				}
				return writeJSON(g.stdout, rows)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tPREFIX\tAPPROVE\tUSED\tEXPIRES\tSTATE")
			for _, t := range infos {
				uses := fmt.Sprintf("%d/%d", t.Used, t.Uses)
				if t.Uses == 0 {
					uses = fmt.Sprintf("%d/any", t.Used)
				}
				prefix := t.Prefix
				if prefix == "" {
					prefix = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, prefix, t.Approve, uses, t.Expires.UTC().Format(time.RFC3339), t.State(now))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json")
	return cmd
}

func newTokenRevoke(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an enrollment token, and cancel the enrollments it left waiting for approval",
		Args:  exactArgs(1, "one token ID (the 6 characters after pge_)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			cancelled, err := enroll.NewTokens(c, g.namespace).Revoke(cmd.Context(), args[0], registry.NewStore(c, g.namespace))
			for _, n := range cancelled {
				fmt.Fprintf(g.stdout, "enrollment of %q waiting for approval cancelled\n", n)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "enrollment token %s revoked\n", args[0])
			return nil
		},
	}
}
