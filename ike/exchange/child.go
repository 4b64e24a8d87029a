package exchange

import (
	"fmt"
	"net/netip"

	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// NATTPort is the UDP port of IKE and ESP after NAT traversal starts
// (RFC 3948, RFC 7296 §2.23).
const NATTPort = 4500

// Result is what a completed IKE_SA_INIT + IKE_AUTH produced.
type Result struct {
	// SPIi and SPIr name the IKE SA.
	SPIi, SPIr uint64
	// IKE and ESP are the transforms negotiated for the IKE SA and the
	// CHILD SA.
	IKE IKESuite
	ESP ESPSuite
	// Peer is what the peer proved: its identity, certificate chain and
	// whether it sent INITIAL_CONTACT.
	Peer PeerInfo
	// Fragmentation is set when both sides announced RFC 7383 support.
	Fragmentation bool
	// Keys are the IKE SA's secrets, for the exchanges that follow.
	Keys *ikecrypto.IKEKeys
	// PRF is the IKE SA's PRF (CREATE_CHILD_SA derives KEYMAT with it).
	PRF *ikecrypto.PRF
	// NATT is set when NAT traversal is on: IKE moved to port 4500 and
	// the CHILD SAs are UDP-encapsulated.
	NATT bool
	// LocalTS and RemoteTS are the traffic selectors agreed, this side's
	// and the peer's.
	LocalTS, RemoteTS []message.TrafficSelector
	// In and Out are the CHILD SAs, ready for xfrm.Engine.AddSA: In
	// carries the peer's traffic to this side (its SPI was chosen here),
	// Out this side's traffic to the peer.
	In, Out xfrm.SAConfig

	// est is what NewIKESA needs beyond the exported fields.
	est *established
}

// established is the state an IKE SA carries from IKE_AUTH into the
// exchanges that follow (NewIKESA).
type established struct {
	initiator  bool // this side was the original initiator
	cfg        Config
	inP, outP  *ikecrypto.Protector
	authReq    []byte   // the responder's IKE_AUTH request and response: a repeated request is answered again
	authResp   [][]byte // (the datagrams: fragments with RFC 7383)
	ikeSuite   IKESuite
	childSuite ESPSuite
}

// establish records, once IKE_AUTH succeeded, what NewIKESA continues
// with: the protectors and, for a responder, the IKE_AUTH request and its
// response (message ID 1) for retransmission.
func (r *Result) establish(initiator bool, cfg *Config, inP, outP *ikecrypto.Protector, authReq []byte, authResp [][]byte) {
	r.est = &established{initiator: initiator, cfg: *cfg, inP: inP, outP: outP,
		authReq: append([]byte(nil), authReq...), authResp: authResp, ikeSuite: r.IKE, childSuite: r.ESP}
}

// childSAs builds the two CHILD SAs of IKE_AUTH. initiator says whether
// this side initiated the exchange that created them (KEYMAT's first keys
// are the initiator's outbound ones, §2.17).
func childSAs(cfg *Config, r *Result, initiator bool, ourSPI, peerSPI uint32, k *ikecrypto.ChildKeys) (in, out xfrm.SAConfig, err error) {
	return buildSAs(saParams{local: cfg.Local, remote: cfg.Remote, natt: r.NATT, mode: cfg.Mode, replay: cfg.ReplayWindow,
		suite: r.ESP, esn: r.ESP.ESN}, initiator, ourSPI, peerSPI, k)
}

// saParams is what the two SAConfigs of a CHILD SA are made of besides
// their SPIs and keys.
type saParams struct {
	local, remote netip.AddrPort // the IKE endpoints, port 500
	natt          bool
	mode          xfrm.Mode
	replay        uint32
	suite         ESPSuite
	esn           bool
}

// buildSAs builds a CHILD SA's inbound and outbound SAConfig from KEYMAT:
// the keys for initiator-to-responder traffic come first (§2.17), where
// initiator is the side that initiated the exchange that created the SA.
func buildSAs(p saParams, initiator bool, ourSPI, peerSPI uint32, k *ikecrypto.ChildKeys) (in, out xfrm.SAConfig, err error) {
	encr, integ, err := espAlgs(p.suite)
	if err != nil {
		return in, out, err
	}
	outEnc, outInteg, inEnc, inInteg := k.EncI, k.IntegI, k.EncR, k.IntegR
	if !initiator {
		outEnc, outInteg, inEnc, inInteg = k.EncR, k.IntegR, k.EncI, k.IntegI
	}
	rw := p.replay
	if rw == 0 {
		rw = 32
	}
	local, remote := p.local, p.remote
	base := func(spi uint32, src, dst netip.AddrPort, enc, auth []byte) (xfrm.SAConfig, error) {
		c := xfrm.SAConfig{Proto: xfrm.ProtoESP, SPI: spi, Src: src.Addr().Unmap(), Dst: dst.Addr().Unmap(), Mode: p.mode, ReplayWindow: rw, ESN: p.esn}
		if err := setAlgorithms(&c, encr, integ, enc, auth); err != nil {
			return c, err
		}
		if p.natt {
			c.Encap = xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: src.Port(), DPort: dst.Port()}
		}
		return c, nil
	}
	if p.natt {
		local = netip.AddrPortFrom(local.Addr(), NATTPort)
		remote = netip.AddrPortFrom(remote.Addr(), NATTPort)
	}
	if out, err = base(peerSPI, local, remote, outEnc, outInteg); err != nil {
		return in, out, err
	}
	in, err = base(ourSPI, remote, local, inEnc, inInteg)
	return in, out, err
}

// setAlgorithms names the ESP transforms as Linux xfrm does, with the
// keys (an AEAD key ends in its 4-byte salt, as rfc4106 and rfc7539esp
// expect).
func setAlgorithms(c *xfrm.SAConfig, encr *ikecrypto.Encr, integ *ikecrypto.Integ, enc, auth []byte) error {
	enc = append([]byte(nil), enc...)
	auth = append([]byte(nil), auth...)
	switch encr.ID {
	case message.ENCR_AES_GCM_16, message.ENCR_AES_GCM_12:
		c.AEAD = xfrm.Algorithm{Name: "rfc4106(gcm(aes))", Key: enc, ICVBits: encr.ICVLen * 8}
		return nil
	case message.ENCR_CHACHA20_POLY1305:
		c.AEAD = xfrm.Algorithm{Name: "rfc7539esp(chacha20,poly1305)", Key: enc, ICVBits: 128}
		return nil
	case message.ENCR_AES_CBC:
		c.Enc = xfrm.Algorithm{Name: "cbc(aes)", Key: enc}
	default:
		return fmt.Errorf("exchange: no xfrm name for encryption transform %d", encr.ID)
	}
	name, ok := map[uint16]string{
		message.AUTH_HMAC_SHA1_96:      "hmac(sha1)",
		message.AUTH_AES_XCBC_96:       "xcbc(aes)",
		message.AUTH_HMAC_SHA2_256_128: "hmac(sha256)",
		message.AUTH_HMAC_SHA2_384_192: "hmac(sha384)",
		message.AUTH_HMAC_SHA2_512_256: "hmac(sha512)",
	}[integ.ID]
	if !ok {
		return fmt.Errorf("exchange: no xfrm name for integrity transform %d", integ.ID)
	}
	c.Auth = xfrm.Algorithm{Name: name, Key: auth, ICVBits: integ.ICVLen * 8}
	return nil
}

// tsContains reports whether selector a covers all of b.
func tsContains(a, b *message.TrafficSelector) bool {
	if a.TSType != b.TSType || !a.Start.IsValid() || !b.Start.IsValid() {
		return false
	}
	if a.IPProto != 0 && a.IPProto != b.IPProto {
		return false
	}
	return a.Start.Compare(b.Start) <= 0 && a.End.Compare(b.End) >= 0 &&
		a.StartPort <= b.StartPort && a.EndPort >= b.EndPort
}

// narrow returns ours if every selector in it lies within one of theirs:
// the responder's narrowing (§2.9) of the initiator's proposal down to its
// own configuration. Partial overlaps are not computed; nil means
// TS_UNACCEPTABLE.
func narrow(theirs, ours []message.TrafficSelector) []message.TrafficSelector {
	for i := range ours {
		ok := false
		for j := range theirs {
			if tsContains(&theirs[j], &ours[i]) {
				ok = true
				break
			}
		}
		if !ok {
			return nil
		}
	}
	return ours
}

// within reports whether every selector of got lies within one of
// offered: what an initiator checks of the responder's TSi/TSr.
func within(got, offered []message.TrafficSelector) bool {
	return len(got) > 0 && narrow(offered, got) != nil
}
