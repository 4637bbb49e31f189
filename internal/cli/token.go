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
			"to N enrollments and to names with a prefix, and may require an operator's approval.",
	}
	cmd.AddCommand(newTokenCreate(g), newTokenList(g), newTokenRevoke(g))
	return cmd
}

// tokenJSON is what `token create -o json` prints.
type tokenJSON struct {
	Token string `json:"token"`
	*enroll.TokenInfo
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
			tok, info, err := enroll.NewTokens(c, g.namespace).Create(cmd.Context(), spec)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(g.stdout, tokenJSON{Token: tok.Reveal(), TokenInfo: info})
			}
			uses := "any number of devices"
			if info.Uses > 0 {
				uses = fmt.Sprintf("%d device(s)", info.Uses)
			}
			fmt.Fprintf(g.stdout, "enrollment token %s created: enrolls %s until %s, names %s, approval %s\n",
				info.ID, uses, info.Expires.UTC().Format(time.RFC3339), prefixText(info.Prefix), info.Approve)
			fmt.Fprintf(g.stdout, "token (shown once): %s\n", tok.Reveal())
			fmt.Fprintf(g.stdout, "a device enrolls with (on a gateway started with --enrollment):\n  curl -X POST http://GATEWAY:6080/picogate/v1/enroll -d '{\"token\":\"%s\",\"name\":\"%sNAME\",\"hardwareId\":\"ID\",\"auth\":\"hmac\"}'\n", tok.Reveal(), info.Prefix)
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&spec.TTL, "ttl", time.Hour, "how long the token can be used")
	f.IntVar(&spec.Uses, "uses", 1, "how many enrollments it allows (0: any number until it expires)")
	f.StringVar(&spec.Prefix, "prefix", "", "device names it may enroll must start with this (e.g. pico-)")
	f.StringVar(&approve, "approve", "auto", "auto: devices get their credential at once; manual: each waits for `picogate device approve NAME`")
	f.StringVarP(&output, "output", "o", "", "output format: json")
	return cmd
}

func prefixText(p string) string {
	if p == "" {
		return "any"
	}
	return "starting with " + p
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
