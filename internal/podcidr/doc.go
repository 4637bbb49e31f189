// Package podcidr keeps device Nodes from eating the cluster's pod CIDRs.
//
// With node IPAM on (k3s always has it: --allocate-node-cidrs, 10.42.0.0/16, a /24 per node),
// kube-controller-manager's range allocator gives every Node without a spec.podCIDR the next free
// block of the cluster CIDR: 256 blocks in all with k3s's defaults, boards and real nodes together.
// A board runs no pods and no CNI, yet its Node takes a block like a kubelet's, and a lab of 250
// boards leaves the real nodes that join later without a pod network (event CIDRNotAvailable).
//
// The allocator, read in k8s.io/kubernetes v1.37.2 (pkg/controller/nodeipam/ipam), allocates only for
// Nodes that name no pod CIDR. For a Node that names one it marks the node-mask block holding it as
// used, and marking a used block again succeeds, so any number of Nodes may name one block. So every
// device Node is created naming the same block: the last node-mask block of the cluster CIDR, the
// one the allocator hands out last. The whole fleet costs one block.
//
// Naming a block is dangerous where it is wrong. At its start the allocator marks every Node's pod
// CIDRs, and one it cannot place (unparsable, outside the cluster CIDR, or more CIDRs than the
// cluster has IP families) makes kube-controller-manager exit, at every start, until that Node is
// gone; spec.podCIDR is immutable once set. So a Reserver names a block only when it can show the
// block lies inside the real cluster CIDR:
//
//   - the cluster CIDR is the operator's (--cluster-cidr), or what every k3s server Node declares in
//     its k3s.io/node-args annotation (the server's own arguments and config file, as k3s records
//     them); a server that names none runs k3s's default 10.42.0.0/16, taken only once a real
//     node's pod CIDR confirms it;
//   - every real node's pod CIDRs lie inside that cluster CIDR, family by family;
//   - no real node's pod CIDR overlaps the block (the allocator already gave it away);
//   - or the operator named the block itself (--device-pod-cidr), checked against the above as far
//     as they are known.
//
// Otherwise it names none, says why in the log, and device Nodes take a block each, as before.
//
// What remains: deleting a device Node releases the block although other device Nodes still name
// it, until one of them is next written (each status write is an update the allocator re-reads).
// The allocator hands that block out only when it reaches the end of the cluster CIDR, and a real
// node that gets it then is noticed: no new device Node names the block while a real node holds it.
package podcidr
