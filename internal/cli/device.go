package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/picogate/picogate/internal/registry"
)

func newDevice(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "device",
		Short: "Register, list, approve, rotate, revoke and remove devices",
	}
	cmd.AddCommand(newDeviceAdd(g), newDeviceList(g), newDeviceApprove(g), newDeviceRevoke(g), newDeviceRotate(g), newDeviceRemove(g))
	return cmd
}

func checkOutput(o string) error {
	if o != "" && o != "json" && o != "text" {
		return usageError{fmt.Errorf("-o %q: want json (or nothing for text)", o)}
	}
	return nil
}

func newDeviceAdd(g *globals) *cobra.Command {
	var auth, ip, output, prefix string
	var count int
	cmd := &cobra.Command{
		Use:   "add NAME | add --count N --prefix PREFIX",
		Short: "Register a device (or N of them) and print its credential once",
		Example: "  picogate device add pico-1\n  picogate device add pico-3 --auth hmac\n  picogate device add pico-2 --auth ip --ip 192.168.1.52\n" +
			"  picogate device add --count 100 --prefix pico- -o json > fleet.json",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			var reqs []registry.AddRequest
			switch {
			case count > 0 && len(args) == 0:
				if auth == string(registry.AuthIP) {
					return usageError{fmt.Errorf("--count with --auth ip: each ip device needs its own address; add them one by one")}
				}
				for i := 1; i <= count; i++ {
					reqs = append(reqs, registry.AddRequest{Name: prefix + strconv.Itoa(i), Auth: registry.AuthMode(auth), Source: ip})
				}
			case count == 0 && len(args) == 1:
				reqs = []registry.AddRequest{{Name: args[0], Auth: registry.AuthMode(auth), Source: ip}}
			default:
				return usageError{fmt.Errorf("give one device NAME, or --count N with --prefix")}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			creds, err := registry.NewStore(c, g.namespace).Add(cmd.Context(), reqs)
			if err != nil {
				return err
			}
			if output == "json" {
				if count > 0 {
					return writeJSON(g.stdout, creds)
				}
				return writeJSON(g.stdout, creds[0])
			}
			for _, cr := range creds {
				printCredential(g.stdout, cr, "registered")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&auth, "auth", "token", "how the device authenticates: token (bearer), hmac (signed requests) or ip")
	f.StringVar(&ip, "ip", "", "source address (ip mode: required, the device's DHCP reservation) or CIDR the device must come from")
	f.IntVarP(&count, "count", "n", 0, "register this many devices named PREFIX1..PREFIXN")
	f.StringVar(&prefix, "prefix", "pico-", "name prefix with --count")
	f.StringVarP(&output, "output", "o", "", "output format: json")
	return cmd
}

func printCredential(w io.Writer, cr registry.Credential, verb string) {
	fmt.Fprintf(w, "device %q %s (auth %s)\n", cr.Name, verb, cr.Auth)
	switch cr.Auth {
	case registry.AuthToken:
		fmt.Fprintf(w, "token (shown once, store it in the firmware): %s\n", cr.Token)
		fmt.Fprintf(w, "the firmware adds this one header to every request:\n  %s\n", cr.Header)
	case registry.AuthHMAC:
		fmt.Fprintf(w, "signing key (shown once, store it in the firmware): %s\n", cr.Key)
		fmt.Fprintf(w, "the firmware signs every request with it (docs/device-protocol.md, \"Signed requests\")\n")
	case registry.AuthIP:
		fmt.Fprintf(w, "recognised by its source address %s; the firmware needs no change\n", cr.Source)
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newDeviceList(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List registered devices",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			infos, err := registry.NewStore(c, g.namespace).List(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(g.stdout, infos)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tAUTH\tSOURCE\tCREATED\tLAST SEEN\tSTATUS")
			now := time.Now()
			for _, d := range infos {
				st := deviceState(now, d)
				seen := "-"
				if d.LastSeen != nil {
					seen = ago(now, *d.LastSeen)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, d.Auth, d.Source, d.Created.UTC().Format(time.RFC3339), seen, st)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json")
	return cmd
}

// deviceState is the STATUS column of device list.
func deviceState(now time.Time, d registry.Info) string {
	switch {
	case d.Invalid != "":
		return "invalid: " + d.Invalid
	case d.Revoked != nil:
		return "revoked " + ago(now, *d.Revoked)
	case d.Approved != nil:
		return "approved, waiting for the device to collect its credential"
	case d.Pending != nil && d.Reenrollment:
		return "re-enrollment waiting for approval since " + ago(now, *d.Pending) + " (hardware " + d.HardwareID + "; its current credential works meanwhile): picogate device approve " + d.Name
	case d.Pending != nil:
		return "waiting for approval since " + ago(now, *d.Pending) + " (hardware " + d.HardwareID + "): picogate device approve " + d.Name
	case d.Rotating:
		return "active, rotating"
	}
	return "active"
}

func ago(now, t time.Time) string {
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}

func newDeviceRevoke(g *globals) *cobra.Command {
	var deleteNode bool
	cmd := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a device's credential (every gateway refuses it within seconds)",
		Args:  exactArgs(1, "one device NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			out, err := registry.NewStore(c, g.namespace).Revoke(cmd.Context(), args[0], deleteNode)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "device %q revoked\n", args[0])
			if deleteNode {
				fmt.Fprintln(g.stdout, out.Describe(args[0]))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&deleteNode, "delete-node", false, "also delete the device's Node and Lease (only a Node picogate created for a device)")
	return cmd
}

func newDeviceRotate(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "rotate NAME",
		Short: "Issue a new token for a device (the old one stops working; a revoked device is re-enabled)",
		Args:  exactArgs(1, "one device NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			cr, err := registry.NewStore(c, g.namespace).Rotate(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(g.stdout, cr)
			}
			printCredential(g.stdout, cr, "rotated")
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json")
	return cmd
}

func newDeviceApprove(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "approve NAME",
		Short: "Approve a device's enrollment (made with a --approve manual token); its next poll gets its credential",
		Args:  exactArgs(1, "one device NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := registry.NewStore(c, g.namespace).Approve(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "device %q approved: it gets its credential on its next enrollment poll\n", args[0])
			return nil
		},
	}
}

func newDeviceRemove(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Deregister a device: revoke it, delete its Node and Lease (only a Node picogate created for a device), then its record",
		Args:  exactArgs(1, "one device NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			out, err := registry.NewStore(c, g.namespace).Remove(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "device %q removed: credential revoked, record deleted; %s\n", args[0], out.Describe(args[0]))
			return nil
		},
	}
}
