package exchange

import (
	"crypto/rand"
	"crypto/subtle"
	"net/netip"

	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
)

// natdNotifies returns the NAT_DETECTION_SOURCE_IP and
// NAT_DETECTION_DESTINATION_IP notifications of an IKE_SA_INIT message
// (RFC 7296 §2.23) sent from local to remote. With fake, the source hash
// is random, so that the peer sees a NAT that is not there (Config.ForceEncap,
// strongSwan's generate_natd_hash_faked).
func natdNotifies(spii, spir uint64, local, remote netip.AddrPort, fake bool) []message.Payload {
	src := ikecrypto.NATDetectionHash(spii, spir, local.Addr(), local.Port())
	if fake {
		rand.Read(src[:])
	}
	dst := ikecrypto.NATDetectionHash(spii, spir, remote.Addr(), remote.Port())
	return []message.Payload{
		&message.Notify{NotifyType: message.NAT_DETECTION_SOURCE_IP, Data: src[:]},
		&message.Notify{NotifyType: message.NAT_DETECTION_DESTINATION_IP, Data: dst[:]},
	}
}

// natDetected checks the peer's NAT-D notifications against the
// addresses this side sees. It reports whether either side is behind a
// NAT, so that both move to port 4500 (§2.23), and whether the peer sent
// them at all (without them there is no NAT traversal).
func natDetected(ps []message.Payload, spii, spir uint64, local, remote netip.AddrPort) (nat, supported bool) {
	srcs := notifies(ps, message.NAT_DETECTION_SOURCE_IP)
	dsts := notifies(ps, message.NAT_DETECTION_DESTINATION_IP)
	if len(srcs) == 0 || len(dsts) != 1 {
		return false, false
	}
	// The peer's source hash must match the address we see it at; there
	// may be several source hashes (a multihomed peer), one must match.
	want := ikecrypto.NATDetectionHash(spii, spir, remote.Addr(), remote.Port())
	peerNAT := true
	for _, n := range srcs {
		if subtle.ConstantTimeCompare(n.Data, want[:]) == 1 {
			peerNAT = false
		}
	}
	mine := ikecrypto.NATDetectionHash(spii, spir, local.Addr(), local.Port())
	localNAT := subtle.ConstantTimeCompare(dsts[0].Data, mine[:]) != 1
	return peerNAT || localNAT, true
}
