package swanctl

import (
	"strconv"
	"strings"

	m "github.com/ipsecstack/ipsecstack/ike/message"
)

// strongSwan's default proposals are built at run time from the loaded
// crypto plugins (proposal_create_default and proposal_create_default_aead
// in src/libstrongswan/crypto/proposal/proposal.c, 5.9.8). These are the
// lists that charon 5.9.8 of Debian 12 (strongswan-charon with
// libstrongswan-standard-plugins, its default plugin set) prints for a
// connection without proposals (log level cfg 2, "proposals = ..."),
// checked by TestOracleCharon against a running charon. The ESP lists do
// not depend on plugins.
var (
	strongswanDefaultIKE = []string{
		"AES_CBC_128/AES_CBC_192/AES_CBC_256/AES_CTR_128/AES_CTR_192/AES_CTR_256/CAMELLIA_CBC_128/CAMELLIA_CBC_192/CAMELLIA_CBC_256/CAMELLIA_CTR_128/CAMELLIA_CTR_192/CAMELLIA_CTR_256/3DES_CBC/" +
			"HMAC_SHA2_256_128/HMAC_SHA2_384_192/HMAC_SHA2_512_256/AES_XCBC_96/AES_CMAC_96/HMAC_SHA1_96/" +
			"PRF_HMAC_SHA2_256/PRF_HMAC_SHA2_384/PRF_HMAC_SHA2_512/PRF_AES128_XCBC/PRF_AES128_CMAC/PRF_HMAC_SHA1/" + defaultKEs,
		"AES_CCM_16_128/AES_CCM_16_192/AES_CCM_16_256/AES_GCM_16_128/AES_GCM_16_192/AES_GCM_16_256/CHACHA20_POLY1305/AES_CCM_8_128/AES_CCM_8_192/AES_CCM_8_256/AES_CCM_12_128/AES_CCM_12_192/AES_CCM_12_256/AES_GCM_8_128/AES_GCM_8_192/AES_GCM_8_256/AES_GCM_12_128/AES_GCM_12_192/AES_GCM_12_256/" +
			"PRF_HMAC_SHA2_256/PRF_HMAC_SHA2_384/PRF_HMAC_SHA2_512/PRF_AES128_XCBC/PRF_AES128_CMAC/PRF_HMAC_SHA1/" + defaultKEs,
	}
	defaultKEs = "CURVE_25519/CURVE_448/ECP_256/ECP_384/ECP_521/ECP_256_BP/ECP_384_BP/ECP_512_BP/MODP_3072/MODP_4096/MODP_6144/MODP_8192/MODP_2048"

	// proposal_create_default_aead(PROTO_ESP), proposal_create_default(PROTO_ESP).
	strongswanDefaultESPAEAD    = "AES_GCM_16_128/AES_GCM_16_192/AES_GCM_16_256/NO_EXT_SEQ"
	strongswanDefaultESPClassic = "AES_CBC_128/AES_CBC_192/AES_CBC_256/HMAC_SHA2_256_128/HMAC_SHA2_384_192/HMAC_SHA2_512_256/HMAC_SHA1_96/AES_XCBC_96/NO_EXT_SEQ"
)

// fromNames builds a proposal from strongSwan's printed transform names,
// keeping only what ipsecstack implements (supported); it returns the
// names it dropped.
func fromNames(proto m.ProtocolID, s string) (m.Proposal, []string) {
	p := m.Proposal{Protocol: proto}
	var dropped []string
	for _, n := range strings.Split(s, "/") {
		t, ok := transformByName(n)
		if ok {
			cand := m.Proposal{Protocol: proto, Transforms: []m.Transform{t}}
			if supported(cand) == nil {
				p.Transforms = append(p.Transforms, t)
				continue
			}
		}
		dropped = append(dropped, n)
	}
	return p, dropped
}

// transformByName is the inverse of transformName.
func transformByName(n string) (m.Transform, bool) {
	base, bits := n, 0
	if i := strings.LastIndexByte(n, '_'); i > 0 {
		if b, err := strconv.Atoi(n[i+1:]); err == nil && (b == 128 || b == 192 || b == 256) {
			if _, ok := lookupName(n); !ok {
				base, bits = n[:i], b
			}
		}
	}
	t, ok := lookupName(base)
	if !ok {
		return m.Transform{}, false
	}
	if bits != 0 {
		t.Attributes = []m.Attribute{m.KeyLengthAttr(bits)}
	}
	return t, true
}

func lookupName(n string) (m.Transform, bool) {
	for typ, ids := range transformNames {
		for id, name := range ids {
			if name == n {
				return m.Transform{Type: typ, ID: id}, true
			}
		}
	}
	return m.Transform{}, false
}

func clone(ps []m.Proposal) []m.Proposal {
	out := make([]m.Proposal, len(ps))
	for i, p := range ps {
		out[i] = p
		out[i].Transforms = append([]m.Transform(nil), p.Transforms...)
		for j := range out[i].Transforms {
			out[i].Transforms[j].Attributes = append([]m.Attribute(nil), p.Transforms[j].Attributes...)
		}
	}
	return out
}

// defaultIKE is strongSwan's default IKE proposals (classic, then AEAD)
// without what ipsecstack does not implement: of the first, AES-CTR,
// Camellia, 3DES, AES-CMAC-96 integrity; of the second, AES-CCM and
// AES-GCM-8; of both, Curve448, ECP-521, the Brainpool curves and MODP
// 3072-8192. What stays, X25519 first, ECP-256/384 and MODP-2048, is what
// a default charon chooses from.
func defaultIKE() []m.Proposal {
	var out []m.Proposal
	for _, s := range strongswanDefaultIKE {
		p, _ := fromNames(m.ProtoIKE, s)
		out = append(out, p)
	}
	return out
}

// DefaultIKEProposals returns the IKE proposals of a connection without
// proposals: strongSwan 5.9.8's defaults (see defaultIKE), numbered.
func DefaultIKEProposals() []m.Proposal {
	ps := defaultIKE()
	numberProposals(ps)
	return ps
}

// DefaultESPProposals returns the ESP proposals of a child without
// esp_proposals: vici's children_sn adds the AEAD default first (AES-GCM-16
// 128/192/256) and then the classic one (AES-CBC 128/192/256 with
// HMAC-SHA2-256/384/512, HMAC-SHA1, AES-XCBC), both without ESN and PFS.
// ipsecstack's data plane implements all of them.
func DefaultESPProposals() []m.Proposal {
	a, _ := fromNames(m.ProtoESP, strongswanDefaultESPAEAD)
	c, _ := fromNames(m.ProtoESP, strongswanDefaultESPClassic)
	ps := []m.Proposal{a, c}
	numberProposals(ps)
	return ps
}

// defaultESPKeyword is esp_proposals = default: parse_proposal adds the
// classic default before the AEAD one, the other way round from a child
// without esp_proposals.
func defaultESPKeyword() []m.Proposal {
	d := DefaultESPProposals()
	return clone([]m.Proposal{d[1], d[0]})
}
