// Package hoststack holds the black-box integration tests of `ipsecstack
// run` as a userspace host stack on real links: two daemons in network
// namespaces joined by a veth pair (AF_PACKET) or by two TAP devices on a
// Linux bridge, configured with --setkey files and driven through
// --forward listeners, `ipsecstack ping` and `ipsecstack stats`; tshark
// decrypts their --pcap captures with their --keylog files.
// TestNATTraversal puts a third namespace between them, a NAT running the
// kernel's nftables masquerade (nft, conntrack). The tests need root and
// iproute2's ip; without them they skip (fail with CI=true).
package hoststack
