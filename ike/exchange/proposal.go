package exchange

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

func encrTransform(id uint16, bits int) message.Transform {
	t := message.Transform{Type: message.TransformENCR, ID: id}
	if bits != 0 && id != message.ENCR_CHACHA20_POLY1305 {
		t.Attributes = []message.Attribute{message.KeyLengthAttr(bits)}
	}
	return t
}

// Proposal returns the suite as a one-choice IKE proposal (number 1, no
// SPI), its transforms in RFC 7296 §3.3.2 order.
func (s IKESuite) Proposal() message.Proposal {
	ts := []message.Transform{encrTransform(s.Encr, s.KeyBits)}
	if s.Integ != message.AUTH_NONE {
		ts = append(ts, message.Transform{Type: message.TransformINTEG, ID: s.Integ})
	}
	ts = append(ts,
		message.Transform{Type: message.TransformPRF, ID: s.PRF},
		message.Transform{Type: message.TransformKE, ID: s.KE})
	return message.Proposal{Num: 1, Protocol: message.ProtoIKE, Transforms: ts}
}

// Proposal returns the suite as a one-choice ESP proposal (number 1, no
// SPI).
func (s ESPSuite) Proposal() message.Proposal {
	ts := []message.Transform{encrTransform(s.Encr, s.KeyBits)}
	if s.Integ != message.AUTH_NONE {
		ts = append(ts, message.Transform{Type: message.TransformINTEG, ID: s.Integ})
	}
	esn := message.ESN_NO
	if s.ESN {
		esn = message.ESN_YES
	}
	ts = append(ts, message.Transform{Type: message.TransformESN, ID: esn})
	return message.Proposal{Num: 1, Protocol: message.ProtoESP, Transforms: ts}
}

func proposalOf(proto message.ProtocolID, groups ...[]message.Transform) message.Proposal {
	var ts []message.Transform
	for _, g := range groups {
		ts = append(ts, g...)
	}
	return message.Proposal{Protocol: proto, Transforms: ts}
}

func ids(t message.TransformType, ids ...uint16) []message.Transform {
	out := make([]message.Transform, len(ids))
	for i, id := range ids {
		out[i] = message.Transform{Type: t, ID: id}
	}
	return out
}

func keyed(ids ...uint16) []message.Transform {
	var out []message.Transform
	for _, id := range ids {
		for _, bits := range []int{128, 192, 256} {
			out = append(out, encrTransform(id, bits))
		}
	}
	return out
}

// Transform IDs strongSwan offers that message does not name.
const (
	encrCamelliaCBC = 23
	encrCamelliaCTR = 24
	keBrainpool256  = 28
	keBrainpool384  = 29
	keBrainpool512  = 30
	keMODP6144      = 17
	keMODP8192      = 18
)

// strongSwanKEs is charon 5.9.8's default key exchange list.
var strongSwanKEs = []uint16{message.KE_CURVE25519, message.KE_CURVE448, message.KE_ECP256, message.KE_ECP384,
	message.KE_ECP521, keBrainpool256, keBrainpool384, keBrainpool512, message.KE_MODP3072, message.KE_MODP4096,
	keMODP6144, keMODP8192, message.KE_MODP2048}

// StrongSwanIKEProposals returns the IKE proposals of strongSwan 5.9.8's
// "default" keyword exactly as charon (Debian 12, openssl plugin) sends
// them in IKE_SA_INIT: one proposal of classic ciphers with integrity
// and one of AEADs, each with every PRF and key exchange method. It
// includes transforms ipsecstack does not implement (Camellia, AES-CTR,
// AES-CCM, Curve448, brainpool, large MODP); DefaultIKEProposals is the
// part of it we can offer.
func StrongSwanIKEProposals() []message.Proposal {
	prfs := ids(message.TransformPRF, message.PRF_HMAC_SHA2_256, message.PRF_HMAC_SHA2_384, message.PRF_HMAC_SHA2_512, message.PRF_HMAC_SHA1)
	kes := ids(message.TransformKE, strongSwanKEs...)
	p1 := proposalOf(message.ProtoIKE,
		keyed(message.ENCR_AES_CBC, message.ENCR_AES_CTR, encrCamelliaCBC, encrCamelliaCTR),
		ids(message.TransformENCR, message.ENCR_3DES),
		ids(message.TransformINTEG, message.AUTH_HMAC_SHA2_256_128, message.AUTH_HMAC_SHA2_384_192, message.AUTH_HMAC_SHA2_512_256, message.AUTH_HMAC_SHA1_96),
		prfs, kes)
	p2 := proposalOf(message.ProtoIKE,
		keyed(message.ENCR_AES_GCM_16, message.ENCR_AES_CCM_16),
		ids(message.TransformENCR, message.ENCR_CHACHA20_POLY1305),
		keyed(message.ENCR_AES_GCM_12, message.ENCR_AES_GCM_8, message.ENCR_AES_CCM_12, message.ENCR_AES_CCM_8),
		prfs, kes)
	p1.Num, p2.Num = 1, 2
	return []message.Proposal{p1, p2}
}

// StrongSwanESPProposals returns the ESP proposals of strongSwan 5.9.8's
// "default" keyword as charon sends them in IKE_AUTH (AES-CBC with
// HMAC-SHA2/SHA1/XCBC, then AES-GCM-16; no ESN, no PFS).
func StrongSwanESPProposals() []message.Proposal {
	p1 := proposalOf(message.ProtoESP,
		keyed(message.ENCR_AES_CBC),
		ids(message.TransformINTEG, message.AUTH_HMAC_SHA2_256_128, message.AUTH_HMAC_SHA2_384_192, message.AUTH_HMAC_SHA2_512_256, message.AUTH_HMAC_SHA1_96, message.AUTH_AES_XCBC_96),
		ids(message.TransformESN, message.ESN_NO))
	p2 := proposalOf(message.ProtoESP, keyed(message.ENCR_AES_GCM_16), ids(message.TransformESN, message.ESN_NO))
	p1.Num, p2.Num = 1, 2
	return []message.Proposal{p1, p2}
}

// DefaultIKEProposals returns strongSwan's default IKE proposals without
// the transforms ipsecstack does not implement, in charon's order: AES-CBC
// 128/192/256 with HMAC-SHA2/SHA1, and AES-GCM-16/ChaCha20-Poly1305/
// AES-GCM-12 with the SHA2/SHA1 PRFs, key exchange X25519, ECP-256,
// ECP-384, MODP-2048. An initiator offering them to a default charon gets
// AES-CBC-128/HMAC-SHA2-256/PRF-SHA2-256/X25519.
func DefaultIKEProposals() []message.Proposal {
	return SupportedProposals(StrongSwanIKEProposals())
}

// DefaultESPProposals returns strongSwan's default ESP proposals without
// what the data plane lacks (all of it is there).
func DefaultESPProposals() []message.Proposal {
	return SupportedProposals(StrongSwanESPProposals())
}

// SupportedProposals returns ps with the transforms ipsecstack does not
// implement removed, dropping proposals left incomplete and numbering the
// rest from 1: what strongSwan does with algorithms no plugin provides.
func SupportedProposals(ps []message.Proposal) []message.Proposal {
	var out []message.Proposal
	for _, p := range ps {
		q := message.Proposal{Protocol: p.Protocol, SPI: p.SPI}
		for _, t := range p.Transforms {
			if transformSupported(p.Protocol, &t) {
				q.Transforms = append(q.Transforms, t)
			}
		}
		if completeProposal(&q) == nil {
			q.Num = uint8(len(out) + 1)
			out = append(out, q)
		}
	}
	return out
}

// transformSupported reports whether ikecrypto (for IKE) or the data
// plane (for ESP) implements t.
func transformSupported(proto message.ProtocolID, t *message.Transform) bool {
	switch t.Type {
	case message.TransformENCR:
		e, err := ikecrypto.LookupEncr(t.ID, keyBits(t))
		if err != nil {
			return false
		}
		if proto == message.ProtoESP && e.AEAD {
			return setAlgorithms(&xfrm.SAConfig{}, e, nil, nil, nil) == nil
		}
		return true
	case message.TransformINTEG:
		if t.ID == message.AUTH_NONE {
			return true
		}
		i, err := ikecrypto.LookupInteg(t.ID)
		if err != nil {
			return false
		}
		if proto == message.ProtoESP {
			cbc, _ := ikecrypto.LookupEncr(message.ENCR_AES_CBC, 128)
			return setAlgorithms(&xfrm.SAConfig{}, cbc, i, nil, nil) == nil
		}
		return true
	case message.TransformPRF:
		_, err := ikecrypto.LookupPRF(t.ID)
		return err == nil && proto == message.ProtoIKE
	case message.TransformKE:
		return t.ID == message.KE_NONE && proto != message.ProtoIKE || ikecrypto.Supported(t.ID)
	case message.TransformESN:
		return proto == message.ProtoESP && (t.ID == message.ESN_NO || t.ID == message.ESN_YES)
	}
	return false
}

// completeProposal checks that p has the transform types its protocol
// needs (RFC 7296 §3.3.3): IKE has ENCR, PRF, KE and INTEG unless every
// ENCR is an AEAD; ESP has ENCR and ESN, and INTEG unless AEAD. AEAD and
// non-AEAD ciphers do not mix in one proposal.
func completeProposal(p *message.Proposal) error {
	has := map[message.TransformType]bool{}
	aead, plain := false, false
	for _, t := range p.Transforms {
		if t.Type == message.TransformINTEG && t.ID == message.AUTH_NONE {
			continue
		}
		has[t.Type] = true
		if t.Type == message.TransformENCR {
			if e, err := ikecrypto.LookupEncr(t.ID, keyBits(&t)); err == nil && e.AEAD {
				aead = true
			} else {
				plain = true
			}
		}
	}
	var need []message.TransformType
	switch p.Protocol {
	case message.ProtoIKE:
		need = []message.TransformType{message.TransformENCR, message.TransformPRF, message.TransformKE}
	case message.ProtoESP:
		need = []message.TransformType{message.TransformENCR, message.TransformESN}
	default:
		return fmt.Errorf("exchange: proposal for protocol %d", p.Protocol)
	}
	for _, t := range need {
		if !has[t] {
			return fmt.Errorf("exchange: proposal %d lacks a transform of type %d", p.Num, t)
		}
	}
	if aead && plain {
		return fmt.Errorf("exchange: proposal %d mixes AEAD and non-AEAD encryption", p.Num)
	}
	if plain && !has[message.TransformINTEG] {
		return fmt.Errorf("exchange: proposal %d has no integrity transform", p.Num)
	}
	if aead && has[message.TransformINTEG] {
		return fmt.Errorf("exchange: proposal %d combines an AEAD with an integrity transform", p.Num)
	}
	return nil
}

// checkProposals validates configured proposals: each complete, each
// transform implemented, so that we never offer what we cannot run.
func checkProposals(ps []message.Proposal, proto message.ProtocolID) error {
	for k := range ps {
		p := &ps[k]
		if p.Protocol != proto {
			return fmt.Errorf("exchange: proposal %d is for protocol %d, want %d", p.Num, p.Protocol, proto)
		}
		for _, t := range p.Transforms {
			if !transformSupported(proto, &t) {
				return fmt.Errorf("exchange: proposal %d: transform type %d ID %d (key length %d) is not implemented", p.Num, t.Type, t.ID, keyBits(&t))
			}
		}
		if err := completeProposal(p); err != nil {
			return err
		}
	}
	return nil
}

func keyBits(t *message.Transform) int {
	n, _ := t.KeyLength()
	return n
}

func sameTransform(a, b *message.Transform) bool {
	return a.Type == b.Type && a.ID == b.ID && keyBits(a) == keyBits(b)
}

// typesOf lists the transform types of p (INTEG NONE, which says "no
// integrity", and KE when skipKE is set, are left out).
func typesOf(p *message.Proposal, skipKE bool) map[message.TransformType]bool {
	m := map[message.TransformType]bool{}
	for _, t := range p.Transforms {
		if t.Type == message.TransformINTEG && t.ID == message.AUTH_NONE || skipKE && t.Type == message.TransformKE {
			continue
		}
		m[t.Type] = true
	}
	return m
}

// intersect picks for each transform type the first of ours (our
// preference, as strongSwan's default prefer_configured_proposals) that
// theirs also offers; for KE, prefer is taken when both offer it (the
// group of the initiator's KE payload, which saves an INVALID_KE_PAYLOAD
// round trip). Both must use the same types (§3.3.6: a proposal that
// lacks a type we need, or needs one we lack, does not match).
func intersect(ours, theirs *message.Proposal, skipKE bool, prefer uint16) ([]message.Transform, bool) {
	ot, tt := typesOf(ours, skipKE), typesOf(theirs, skipKE)
	if len(ot) != len(tt) {
		return nil, false
	}
	var out []message.Transform
	for _, typ := range []message.TransformType{message.TransformENCR, message.TransformINTEG, message.TransformPRF, message.TransformKE, message.TransformESN} {
		if !ot[typ] {
			continue
		}
		if !tt[typ] {
			return nil, false
		}
		var pick *message.Transform
		for k := range ours.Transforms {
			o := &ours.Transforms[k]
			if o.Type != typ {
				continue
			}
			for j := range theirs.Transforms {
				if sameTransform(o, &theirs.Transforms[j]) {
					if pick == nil || typ == message.TransformKE && o.ID == prefer {
						pick = o
					}
					break
				}
			}
			if pick != nil && (typ != message.TransformKE || pick.ID == prefer) {
				break
			}
		}
		if pick == nil {
			return nil, false
		}
		out = append(out, *pick)
	}
	return out, true
}

// selectProposal chooses, as a responder, the first of our proposals
// (in our order) that one of the peer's (in its order) matches, with
// RFC 7296 §2.7's rules: the protocol and SPI size must fit, and one
// transform of each type is chosen. It returns the peer's proposal (for
// its number and SPI) and the transforms chosen.
func selectProposal(ours, theirs []message.Proposal, proto message.ProtocolID, spiLen int, skipKE bool, prefer uint16) (*message.Proposal, []message.Transform, bool) {
	for k := range ours {
		for j := range theirs {
			p := &theirs[j]
			if p.Protocol != proto || len(p.SPI) != spiLen {
				continue
			}
			if ts, ok := intersect(&ours[k], p, skipKE, prefer); ok {
				return p, ts, true
			}
		}
	}
	return nil, nil, false
}

// acceptResponse checks, as initiator, the responder's single chosen
// proposal: one transform of each type, each from the offered proposal of
// the same number, no type missing (§2.7, §3.3.6).
func acceptResponse(offered []message.Proposal, got *message.Proposal, skipKE bool) error {
	var off *message.Proposal
	for k := range offered {
		if offered[k].Num == got.Num && offered[k].Protocol == got.Protocol {
			off = &offered[k]
		}
	}
	if off == nil {
		return fmt.Errorf("exchange: response chose proposal %d, which we did not offer", got.Num)
	}
	seen := map[message.TransformType]bool{}
	for k := range got.Transforms {
		t := &got.Transforms[k]
		if t.Type == message.TransformKE && skipKE {
			return errors.New("exchange: response chose a key exchange method in IKE_AUTH")
		}
		if seen[t.Type] {
			return fmt.Errorf("exchange: response chose two transforms of type %d", t.Type)
		}
		seen[t.Type] = true
		found := t.Type == message.TransformINTEG && t.ID == message.AUTH_NONE
		for j := range off.Transforms {
			found = found || sameTransform(t, &off.Transforms[j])
		}
		if !found {
			return fmt.Errorf("exchange: response chose transform type %d ID %d, which proposal %d did not offer", t.Type, t.ID, got.Num)
		}
	}
	want := typesOf(off, skipKE)
	if got := typesOf(got, skipKE); len(got) != len(want) {
		return fmt.Errorf("exchange: response to proposal %d lacks a transform type", off.Num)
	}
	return nil
}

// ikeSuiteOf reads the chosen transforms of an IKE proposal.
func ikeSuiteOf(ts []message.Transform) (IKESuite, error) {
	var s IKESuite
	for k := range ts {
		t := &ts[k]
		switch t.Type {
		case message.TransformENCR:
			s.Encr, s.KeyBits = t.ID, keyBits(t)
		case message.TransformINTEG:
			s.Integ = t.ID
		case message.TransformPRF:
			s.PRF = t.ID
		case message.TransformKE:
			s.KE = t.ID
		}
	}
	if s.Encr == message.ENCR_CHACHA20_POLY1305 {
		s.KeyBits = 0
	}
	if _, _, _, err := ikeAlgs(s); err != nil {
		return s, err
	}
	if !ikecrypto.Supported(s.KE) {
		return s, fmt.Errorf("exchange: key exchange method %d not supported", s.KE)
	}
	return s, nil
}

// espSuiteOf reads the chosen transforms of an ESP proposal and its key
// exchange method (KE_NONE without PFS).
func espSuiteOf(ts []message.Transform) (ESPSuite, uint16, error) {
	var s ESPSuite
	var ke uint16
	for k := range ts {
		t := &ts[k]
		switch t.Type {
		case message.TransformENCR:
			s.Encr, s.KeyBits = t.ID, keyBits(t)
		case message.TransformINTEG:
			s.Integ = t.ID
		case message.TransformESN:
			s.ESN = t.ID == message.ESN_YES
		case message.TransformKE:
			ke = t.ID
		}
	}
	if s.Encr == message.ENCR_CHACHA20_POLY1305 {
		s.KeyBits = 0
	}
	_, _, err := espAlgs(s)
	return s, ke, err
}

// withSPI returns the proposals numbered from 1 (RFC 7296 §3.3.1) and
// carrying spi: what an initiator sends.
func withSPI(ps []message.Proposal, spi []byte) []message.Proposal {
	out := make([]message.Proposal, len(ps))
	for k, p := range ps {
		p.Num, p.SPI = uint8(k+1), spi
		out[k] = p
	}
	return out
}

// stripKE returns ps without key exchange transforms: what IKE_AUTH
// offers, since its CHILD SA is keyed from the IKE SA's exchange (PFS
// groups of the configuration apply to CREATE_CHILD_SA; strongSwan strips
// them the same way).
func stripKE(ps []message.Proposal) []message.Proposal {
	out := make([]message.Proposal, len(ps))
	for k, p := range ps {
		q := p
		q.Transforms = nil
		for _, t := range p.Transforms {
			if t.Type != message.TransformKE {
				q.Transforms = append(q.Transforms, t)
			}
		}
		out[k] = q
	}
	return out
}

// chosenProposal is what a responder sends back: the peer's proposal
// number, our SPI, one transform of each type.
func chosenProposal(num uint8, proto message.ProtocolID, spi []byte, ts []message.Transform) message.Proposal {
	return message.Proposal{Num: num, Protocol: proto, SPI: spi, Transforms: ts}
}

// keGroups lists the key exchange methods of ps in order, without
// duplicates: the first is what an initiator puts in its KE payload.
func keGroups(ps []message.Proposal) []uint16 {
	var out []uint16
	for _, p := range ps {
		for _, t := range p.Transforms {
			if t.Type == message.TransformKE && !containsU16(out, t.ID) {
				out = append(out, t.ID)
			}
		}
	}
	return out
}

func containsU16(s []uint16, v uint16) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func spiBytes(spi uint32) []byte { return binary.BigEndian.AppendUint32(nil, spi) }
