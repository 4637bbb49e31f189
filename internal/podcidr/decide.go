package podcidr

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Settings are the operator's choices; zero values mean "find out from the cluster".
type Settings struct {
	// Off: device Nodes name no pod CIDR, and the allocator gives each one a block (--device-pod-cidr=none).
	Off bool
	// Block is the pod CIDR every device Node names, one per cluster IP family in the cluster CIDR's
	// order (--device-pod-cidr). Empty: the last node-mask block of each cluster CIDR.
	Block []netip.Prefix
	// ClusterCIDRs is kube-controller-manager's --cluster-cidr (--cluster-cidr). Empty: what the
	// k3s servers' k3s.io/node-args say.
	ClusterCIDRs []netip.Prefix
	// NodeMaskV4 and NodeMaskV6 are kube-controller-manager's node CIDR mask sizes
	// (--node-cidr-mask-size). 0: what the k3s servers' arguments say, else the mask of the real
	// nodes' pod CIDRs, else 24 and 64, kube-controller-manager's defaults.
	NodeMaskV4, NodeMaskV6 int
}

// Decision is what device Nodes are created with.
type Decision struct {
	// PodCIDRs is the spec.podCIDRs of every device Node; empty leaves them unset, for the allocator.
	PodCIDRs []netip.Prefix
	// Why says where the cluster CIDR and the block came from, or why there is none.
	Why string
}

// Strings returns PodCIDRs as the Node's spec takes them.
func (d Decision) Strings() []string {
	out := make([]string, len(d.PodCIDRs))
	for i, p := range d.PodCIDRs {
		out[i] = p.String()
	}
	return out
}

const (
	defaultMaskV4 = 24
	defaultMaskV6 = 64
	// maxMaskDiffV6 is kube-controller-manager's limit on an IPv6 node mask's length beyond the
	// cluster CIDR's (cidrset.clusterSubnetMaxDiff).
	maxMaskDiffV6 = 16
)

// Decide chooses the pod CIDRs of device Nodes from the operator's settings and the real nodes
// (every Node that is not a device's). It names a block only when it can show the block lies inside
// the cluster CIDR and no real node's pod CIDR overlaps it.
func Decide(s Settings, real []corev1.Node) Decision {
	if s.Off {
		return Decision{Why: "turned off (--device-pod-cidr=none)"}
	}
	real = slices.Clone(real)
	slices.SortFunc(real, func(a, b corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	cluster, masks, source, clusterErr := clusterCIDRs(s, real)
	if clusterErr == nil {
		if err := consistent(cluster, real); err != nil {
			return Decision{Why: fmt.Sprintf("the cluster CIDR %s (%s) is not the cluster's: %v", joinPrefixes(cluster), source, err)}
		}
	}
	var block []netip.Prefix
	switch {
	case len(s.Block) > 0:
		block = s.Block
		if clusterErr != nil {
			// The operator vouches for the block; nothing here contradicts it.
			source = "--device-pod-cidr, the cluster CIDR unknown (" + clusterErr.Error() + ")"
			break
		}
		if err := inside(block, cluster); err != nil {
			return Decision{Why: fmt.Sprintf("--device-pod-cidr %s: %v", joinPrefixes(block), err)}
		}
		source = "--device-pod-cidr, inside the cluster CIDR " + joinPrefixes(cluster) + " (" + source + ")"
	case clusterErr != nil:
		return Decision{Why: clusterErr.Error()}
	default:
		for i, c := range cluster {
			b, err := lastBlock(c, masks[i])
			if err != nil {
				return Decision{Why: err.Error()}
			}
			block = append(block, b)
		}
		source = fmt.Sprintf("the last node block of the cluster CIDR %s (%s)", joinPrefixes(cluster), source)
	}
	for _, n := range real {
		for i, s := range n.Spec.PodCIDRs {
			p, err := netip.ParsePrefix(s)
			if err == nil && i < len(block) && p.Overlaps(block[i]) {
				return Decision{Why: fmt.Sprintf("node %s, not a device's, has pod CIDR %s, which overlaps %s, the block for devices", n.Name, s, block[i])}
			}
		}
	}
	return Decision{PodCIDRs: block, Why: source}
}

// clusterCIDRs returns the cluster CIDR, its node mask sizes and where they came from.
func clusterCIDRs(s Settings, real []corev1.Node) (cluster []netip.Prefix, masks []int, source string, err error) {
	var fromK3s k3sArgs
	switch {
	case len(s.ClusterCIDRs) > 0:
		cluster, source = s.ClusterCIDRs, "--cluster-cidr"
	default:
		fromK3s, source, err = k3sServers(real)
		if err != nil {
			return nil, nil, "", err
		}
		cluster = fromK3s.clusterCIDRs
	}
	if len(cluster) > 2 || (len(cluster) == 2 && cluster[0].Addr().Is4() == cluster[1].Addr().Is4()) {
		return nil, nil, "", fmt.Errorf("cluster CIDR %s (%s): want one CIDR, or one per IP family", joinPrefixes(cluster), source)
	}
	for i, c := range cluster {
		if c != c.Masked() {
			return nil, nil, "", fmt.Errorf("cluster CIDR %s (%s): not a network address", c, source)
		}
		mask := s.NodeMaskV6
		fromArgs := fromK3s.maskV6
		def := defaultMaskV6
		if c.Addr().Is4() {
			mask, fromArgs, def = s.NodeMaskV4, fromK3s.maskV4, defaultMaskV4
		}
		if mask == 0 {
			mask = fromArgs
		}
		if mask == 0 {
			mask = observedMask(real, i, c)
		}
		if mask == 0 {
			mask = def
		}
		masks = append(masks, mask)
	}
	return cluster, masks, source, nil
}

// k3sServers reads the cluster CIDR every k3s server Node declares. All must agree. A server that
// declares none runs k3s's default, which is taken only when a real node's pod CIDR lies inside it:
// an IPv6-only k3s, for one, defaults to another network.
func k3sServers(real []corev1.Node) (k3sArgs, string, error) {
	var found k3sArgs
	var names []string
	defaulted := false
	for _, n := range real {
		a, ok, err := parseK3sArgs(n.Annotations[NodeArgsAnnotation])
		if !ok || !a.server {
			continue
		}
		if err != nil {
			return k3sArgs{}, "", fmt.Errorf("node %s's %s: %w", n.Name, NodeArgsAnnotation, err)
		}
		if a.clusterCIDRs == nil {
			a.clusterCIDRs = []netip.Prefix{netip.MustParsePrefix(K3sDefaultClusterCIDR)}
			defaulted = true
		}
		if len(names) > 0 && (joinPrefixes(a.clusterCIDRs) != joinPrefixes(found.clusterCIDRs) || a.maskV4 != found.maskV4 || a.maskV6 != found.maskV6) {
			return k3sArgs{}, "", fmt.Errorf("k3s servers %s and %s run with different cluster CIDRs or node masks (%s, %s)",
				names[0], n.Name, joinPrefixes(found.clusterCIDRs), joinPrefixes(a.clusterCIDRs))
		}
		found = a
		names = append(names, n.Name)
	}
	if len(names) == 0 {
		return k3sArgs{}, "", errors.New("the cluster CIDR is unknown: no --cluster-cidr, and no Node of a k3s server (annotation " + NodeArgsAnnotation + ") to read it from")
	}
	source := "the k3s.io/node-args of k3s server " + strings.Join(names, ", ")
	if defaulted {
		source = "k3s's default, as server " + strings.Join(names, ", ") + " names none"
		if !confirmed(found.clusterCIDRs[0], real) {
			return k3sArgs{}, "", fmt.Errorf("the cluster CIDR is unknown: k3s server %s names none, and no node's pod CIDR shows k3s's default %s is in use", names[0], K3sDefaultClusterCIDR)
		}
	}
	return found, source, nil
}

// confirmed reports whether some real node's first pod CIDR lies inside c.
func confirmed(c netip.Prefix, real []corev1.Node) bool {
	for _, n := range real {
		if len(n.Spec.PodCIDRs) == 0 {
			continue
		}
		if p, err := netip.ParsePrefix(n.Spec.PodCIDRs[0]); err == nil && within(p, c) {
			return true
		}
	}
	return false
}

// consistent checks every real node's pod CIDRs against the cluster CIDR the way the allocator will
// at its start: parsable, no more than the cluster's families, each inside its cluster CIDR. A node
// that fails shows the cluster CIDR is not what it is taken to be.
func consistent(cluster []netip.Prefix, real []corev1.Node) error {
	for _, n := range real {
		if len(n.Spec.PodCIDRs) > len(cluster) {
			return fmt.Errorf("node %s has %d pod CIDRs (%s)", n.Name, len(n.Spec.PodCIDRs), strings.Join(n.Spec.PodCIDRs, ","))
		}
		for i, s := range n.Spec.PodCIDRs {
			p, err := netip.ParsePrefix(s)
			if err != nil || !within(p, cluster[i]) {
				return fmt.Errorf("node %s has pod CIDR %s, outside %s", n.Name, s, cluster[i])
			}
		}
	}
	return nil
}

// inside checks a block given by the operator: one per cluster CIDR, each within it and smaller.
func inside(block, cluster []netip.Prefix) error {
	if len(block) != len(cluster) {
		return fmt.Errorf("want one CIDR per cluster CIDR (%s)", joinPrefixes(cluster))
	}
	for i, b := range block {
		if b != b.Masked() {
			return fmt.Errorf("%s is not a network address", b)
		}
		if !within(b, cluster[i]) || b.Bits() == cluster[i].Bits() {
			return fmt.Errorf("%s is not a part of the cluster CIDR %s", b, cluster[i])
		}
	}
	return nil
}

// observedMask is the prefix length every real node's pod CIDR at index i within c has, or 0 when
// there are none or they differ: the allocator gives every node the same.
func observedMask(real []corev1.Node, i int, c netip.Prefix) int {
	mask := 0
	for _, n := range real {
		if i >= len(n.Spec.PodCIDRs) {
			continue
		}
		p, err := netip.ParsePrefix(n.Spec.PodCIDRs[i])
		if err != nil || !within(p, c) {
			continue
		}
		if mask != 0 && p.Bits() != mask {
			return 0
		}
		mask = p.Bits()
	}
	return mask
}

// lastBlock is the last block of mask bits in cluster: the one the allocator hands out last.
func lastBlock(cluster netip.Prefix, mask int) (netip.Prefix, error) {
	bits := cluster.Addr().BitLen()
	switch {
	case mask <= cluster.Bits():
		return netip.Prefix{}, fmt.Errorf("node CIDR mask size %d: the cluster CIDR %s holds one node block at most, none to spare for devices", mask, cluster)
	case mask > bits:
		return netip.Prefix{}, fmt.Errorf("node CIDR mask size %d: longer than an address of %s", mask, cluster)
	case bits == 128 && mask-cluster.Bits() > maxMaskDiffV6:
		return netip.Prefix{}, fmt.Errorf("node CIDR mask size %d: more than %d bits beyond the cluster CIDR %s, which kube-controller-manager refuses", mask, maxMaskDiffV6, cluster)
	}
	a := cluster.Addr().As16()
	off := 128 - bits // an IPv4 address sits in the last 4 bytes
	for i := cluster.Bits(); i < bits; i++ {
		a[(off+i)/8] |= 0x80 >> ((off + i) % 8)
	}
	last := netip.AddrFrom16(a)
	if cluster.Addr().Is4() {
		last = last.Unmap()
	}
	return netip.PrefixFrom(last, mask).Masked(), nil
}

// within reports whether p lies inside c, same family, no larger.
func within(p, c netip.Prefix) bool {
	return p.Addr().Is4() == c.Addr().Is4() && p.Bits() >= c.Bits() && c.Contains(p.Addr())
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// ParseSettings reads the flags: device is "auto" (or empty), "none", or the block as CIDRs in the
// cluster CIDR's order, comma-separated; cluster is kube-controller-manager's --cluster-cidr, empty to
// read it from the k3s servers; mask its --node-cidr-mask-size, 0 to find it out.
func ParseSettings(device, cluster string, mask int) (Settings, error) {
	var s Settings
	var errs []error
	switch device {
	case "", "auto":
	case "none":
		s.Off = true
	default:
		b, err := parseList(device)
		if err != nil {
			errs = append(errs, fmt.Errorf("--device-pod-cidr: %w", err))
		}
		s.Block = b
	}
	if cluster != "" {
		c, err := parseList(cluster)
		if err != nil {
			errs = append(errs, fmt.Errorf("--cluster-cidr: %w", err))
		}
		s.ClusterCIDRs = c
	}
	if mask < 0 || mask > 128 {
		errs = append(errs, fmt.Errorf("--node-cidr-mask-size %d: want a prefix length", mask))
	}
	s.NodeMaskV4, s.NodeMaskV6 = mask, mask
	if mask > 32 {
		s.NodeMaskV4 = 0
	}
	if s.Off && (len(s.ClusterCIDRs) > 0 || mask != 0) {
		errs = append(errs, errors.New("--device-pod-cidr=none: --cluster-cidr and --node-cidr-mask-size have nothing to do"))
	}
	return s, errors.Join(errs...)
}

// parseList reads one CIDR, or one per IP family, comma-separated, each a network address.
func parseList(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%s is not a network address (%s is)", p, p.Masked())
		}
		out = append(out, p)
	}
	if len(out) > 2 || (len(out) == 2 && out[0].Addr().Is4() == out[1].Addr().Is4()) {
		return nil, fmt.Errorf("%q: want one CIDR, or one per IP family", v)
	}
	return out, nil
}
