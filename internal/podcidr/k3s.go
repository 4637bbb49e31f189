package podcidr

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// NodeArgsAnnotation is where k3s records, on every Node it runs, the arguments it was started with:
// a JSON array of strings, the command line merged with the config file, each --flag=value split in
// two ("--cluster-cidr", "10.42.0.0/16") and secrets replaced by "********".
const NodeArgsAnnotation = "k3s.io/node-args"

// K3sDefaultClusterCIDR is the cluster CIDR of a k3s server started without --cluster-cidr.
const K3sDefaultClusterCIDR = "10.42.0.0/16"

// k3sArgs is what a k3s Node's arguments say about node IPAM.
type k3sArgs struct {
	server bool
	// clusterCIDRs is --cluster-cidr in order (repeatable, each comma-separated); nil when not given.
	clusterCIDRs []netip.Prefix
	// maskV4 and maskV6 are kube-controller-manager's node CIDR mask sizes from
	// --kube-controller-manager-arg; 0 when not given.
	maskV4, maskV6 int
}

// parseK3sArgs reads the k3s.io/node-args annotation. ok is false when it is not a JSON array of
// strings; a value it cannot read (a bad CIDR, a bad mask) is an error, never guessed around.
func parseK3sArgs(annotation string) (args k3sArgs, ok bool, err error) {
	var list []string
	if json.Unmarshal([]byte(annotation), &list) != nil || len(list) == 0 {
		return args, false, nil
	}
	args.server = list[0] == "server"
	for i := 1; i < len(list); i++ {
		flag, value, inline := strings.Cut(list[i], "=")
		if !strings.HasPrefix(flag, "--") {
			continue
		}
		if !inline {
			if i+1 >= len(list) {
				value = ""
			} else {
				value = list[i+1]
			}
		}
		switch flag {
		case "--cluster-cidr":
			for _, s := range strings.Split(value, ",") {
				p, err := netip.ParsePrefix(strings.TrimSpace(s))
				if err != nil {
					return args, true, fmt.Errorf("--cluster-cidr %q: %w", value, err)
				}
				args.clusterCIDRs = append(args.clusterCIDRs, p)
			}
		case "--kube-controller-manager-arg":
			if err := args.controllerManagerArg(value); err != nil {
				return args, true, err
			}
		}
	}
	return args, true, nil
}

// controllerManagerArg takes the node CIDR mask sizes from one --kube-controller-manager-arg value
// ("node-cidr-mask-size=25", with or without leading dashes).
func (a *k3sArgs) controllerManagerArg(value string) error {
	name, v, ok := strings.Cut(strings.TrimLeft(value, "-"), "=")
	if !ok {
		return nil
	}
	var dst []*int
	switch name {
	case "node-cidr-mask-size":
		dst = []*int{&a.maskV4, &a.maskV6}
	case "node-cidr-mask-size-ipv4":
		dst = []*int{&a.maskV4}
	case "node-cidr-mask-size-ipv6":
		dst = []*int{&a.maskV6}
	default:
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > 128 {
		return fmt.Errorf("--kube-controller-manager-arg %q: not a mask size", value)
	}
	for _, d := range dst {
		*d = n
	}
	return nil
}
