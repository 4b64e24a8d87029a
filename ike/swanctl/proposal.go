package swanctl

import (
	"fmt"
	"strings"

	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	m "github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm/esp"
)

// A proposal string is strongSwan's: algorithm keywords joined by "-",
// e.g. aes256gcm16-prfsha384-ecp384 (proposal_create_from_string in
// src/libstrongswan/crypto/proposal/proposal.c, 5.9.8). Each keyword adds
// one transform; several of one type are alternatives, in the order given.

// keyword is one entry of strongSwan's proposal_keywords_static.txt.
type keyword struct {
	typ  m.TransformType
	id   uint16
	bits int
	// unsupported says why ipsecstack cannot use the algorithm at all
	// (strongSwan knows it; no IANA ID or no implementation here).
	unsupported string
}

const (
	noImpl    = "not implemented by ipsecstack"
	privateID = "a strongSwan private-use algorithm"
)

// keywords is src/libstrongswan/crypto/proposal/proposal_keywords_static.txt
// of strongSwan 5.9.8, complete, so that a known but unsupported algorithm
// gets a different error than a typo. IDs are IANA's (RFC 7296 §3.3.2 and
// the "IKEv2 Transform Type" registries).
var keywords = func() map[string]keyword {
	k := map[string]keyword{
		"null": {typ: m.TransformENCR, id: m.ENCR_NULL},
		"des":  {typ: m.TransformENCR, id: 2},
		"3des": {typ: m.TransformENCR, id: m.ENCR_3DES},
		"aes":  {typ: m.TransformENCR, id: m.ENCR_AES_CBC, bits: 128},

		"chacha20poly1305":       {typ: m.TransformENCR, id: m.ENCR_CHACHA20_POLY1305},
		"chacha20poly1305compat": {typ: m.TransformENCR, id: m.ENCR_CHACHA20_POLY1305, bits: 256, unsupported: "the pre-RFC 7634 draft ChaCha20-Poly1305 with a key length attribute; use chacha20poly1305"},

		"sha":         {typ: m.TransformINTEG, id: m.AUTH_HMAC_SHA1_96},
		"sha1":        {typ: m.TransformINTEG, id: m.AUTH_HMAC_SHA1_96},
		"sha1_160":    {typ: m.TransformINTEG, unsupported: privateID},
		"sha256":      {typ: m.TransformINTEG, id: m.AUTH_HMAC_SHA2_256_128},
		"sha2_256":    {typ: m.TransformINTEG, id: m.AUTH_HMAC_SHA2_256_128},
		"sha256_96":   {typ: m.TransformINTEG, unsupported: privateID},
		"sha2_256_96": {typ: m.TransformINTEG, unsupported: privateID},
		"sha384":      {typ: m.TransformINTEG, id: m.AUTH_HMAC_SHA2_384_192},
		"sha2_384":    {typ: m.TransformINTEG, id: m.AUTH_HMAC_SHA2_384_192},
		"sha512":      {typ: m.TransformINTEG, id: m.AUTH_HMAC_SHA2_512_256},
		"sha2_512":    {typ: m.TransformINTEG, id: m.AUTH_HMAC_SHA2_512_256},
		"md5":         {typ: m.TransformINTEG, id: 1},
		"md5_128":     {typ: m.TransformINTEG, unsupported: privateID},
		"aesxcbc":     {typ: m.TransformINTEG, id: m.AUTH_AES_XCBC_96},
		"aescmac":     {typ: m.TransformINTEG, id: m.AUTH_AES_CMAC_96},

		"camelliaxcbc":    {typ: m.TransformINTEG, unsupported: noImpl},
		"prfsha1":         {typ: m.TransformPRF, id: m.PRF_HMAC_SHA1},
		"prfsha256":       {typ: m.TransformPRF, id: m.PRF_HMAC_SHA2_256},
		"prfsha384":       {typ: m.TransformPRF, id: m.PRF_HMAC_SHA2_384},
		"prfsha512":       {typ: m.TransformPRF, id: m.PRF_HMAC_SHA2_512},
		"prfmd5":          {typ: m.TransformPRF, id: m.PRF_HMAC_MD5},
		"prfaesxcbc":      {typ: m.TransformPRF, id: m.PRF_AES128_XCBC},
		"prfcamelliaxcbc": {typ: m.TransformPRF, unsupported: noImpl},
		"prfaescmac":      {typ: m.TransformPRF, id: m.PRF_AES128_CMAC},

		"none":       {typ: m.TransformKE, id: m.KE_NONE},
		"modpnone":   {typ: m.TransformKE, id: m.KE_NONE},
		"modpnull":   {typ: m.TransformKE, unsupported: privateID},
		"modp768":    {typ: m.TransformKE, id: 1},
		"modp1024":   {typ: m.TransformKE, id: 2},
		"modp1536":   {typ: m.TransformKE, id: 5},
		"modp2048":   {typ: m.TransformKE, id: m.KE_MODP2048},
		"modp3072":   {typ: m.TransformKE, id: m.KE_MODP3072},
		"modp4096":   {typ: m.TransformKE, id: m.KE_MODP4096},
		"modp6144":   {typ: m.TransformKE, id: 17},
		"modp8192":   {typ: m.TransformKE, id: 18},
		"ecp192":     {typ: m.TransformKE, id: 25},
		"ecp224":     {typ: m.TransformKE, id: 26},
		"ecp256":     {typ: m.TransformKE, id: m.KE_ECP256},
		"ecp384":     {typ: m.TransformKE, id: m.KE_ECP384},
		"ecp521":     {typ: m.TransformKE, id: m.KE_ECP521},
		"ecp224bp":   {typ: m.TransformKE, id: 27},
		"ecp256bp":   {typ: m.TransformKE, id: 28},
		"ecp384bp":   {typ: m.TransformKE, id: 29},
		"ecp512bp":   {typ: m.TransformKE, id: 30},
		"curve25519": {typ: m.TransformKE, id: m.KE_CURVE25519},
		"x25519":     {typ: m.TransformKE, id: m.KE_CURVE25519},
		"curve448":   {typ: m.TransformKE, id: m.KE_CURVE448},
		"x448":       {typ: m.TransformKE, id: m.KE_CURVE448},

		"modp1024s160": {typ: m.TransformKE, id: 22},
		"modp2048s224": {typ: m.TransformKE, id: 23},
		"modp2048s256": {typ: m.TransformKE, id: 24},
		"ntru112":      {typ: m.TransformKE, unsupported: privateID},
		"ntru128":      {typ: m.TransformKE, unsupported: privateID},
		"ntru192":      {typ: m.TransformKE, unsupported: privateID},
		"ntru256":      {typ: m.TransformKE, unsupported: privateID},
		"newhope128":   {typ: m.TransformKE, unsupported: privateID},

		"noesn": {typ: m.TransformESN, id: m.ESN_NO},
		"esn":   {typ: m.TransformESN, id: m.ESN_YES},

		"cast128": {typ: m.TransformENCR, id: 6, bits: 128},
	}
	for _, b := range []int{128, 192, 256} {
		n := fmt.Sprint(b)
		k["aes"+n] = keyword{typ: m.TransformENCR, id: m.ENCR_AES_CBC, bits: b}
		k["aes"+n+"ctr"] = keyword{typ: m.TransformENCR, id: m.ENCR_AES_CTR, bits: b}
		for _, icv := range []struct {
			ids   [2]uint16 // CCM, GCM
			names []string
		}{
			{[2]uint16{m.ENCR_AES_CCM_8, m.ENCR_AES_GCM_8}, []string{"8", "64"}},
			{[2]uint16{m.ENCR_AES_CCM_12, m.ENCR_AES_GCM_12}, []string{"12", "96"}},
			{[2]uint16{m.ENCR_AES_CCM_16, m.ENCR_AES_GCM_16}, []string{"16", "128", ""}},
		} {
			for _, s := range icv.names {
				k["aes"+n+"ccm"+s] = keyword{typ: m.TransformENCR, id: icv.ids[0], bits: b}
				k["aes"+n+"gcm"+s] = keyword{typ: m.TransformENCR, id: icv.ids[1], bits: b}
				k["camellia"+n+"ccm"+s] = keyword{typ: m.TransformENCR, unsupported: noImpl}
			}
		}
		delete(k, "camellia"+n+"ccm") // not a 5.9.8 keyword
		k["aes"+n+"gmac"] = keyword{typ: m.TransformENCR, id: m.ENCR_NULL_AUTH_AES_GMAC, bits: b}
		for _, c := range []string{"blowfish", "camellia", "serpent", "twofish"} {
			k[c+n] = keyword{typ: m.TransformENCR, unsupported: noImpl}
		}
		k["camellia"+n+"ctr"] = keyword{typ: m.TransformENCR, unsupported: noImpl}
	}
	for _, c := range []string{"blowfish", "camellia", "serpent", "twofish"} {
		k[c] = keyword{typ: m.TransformENCR, unsupported: noImpl}
	}
	return k
}()

// integPRF is check_proposal's integ_prf_map: an IKE proposal without a
// PRF takes the PRFs matching its integrity algorithms.
var integPRF = map[uint16]uint16{
	m.AUTH_HMAC_SHA1_96:      m.PRF_HMAC_SHA1,
	m.AUTH_HMAC_SHA2_256_128: m.PRF_HMAC_SHA2_256,
	m.AUTH_HMAC_SHA2_384_192: m.PRF_HMAC_SHA2_384,
	m.AUTH_HMAC_SHA2_512_256: m.PRF_HMAC_SHA2_512,
	1:                        m.PRF_HMAC_MD5, // AUTH_HMAC_MD5_96
	m.AUTH_AES_XCBC_96:       m.PRF_AES128_XCBC,
	m.AUTH_AES_CMAC_96:       m.PRF_AES128_CMAC,
}

func isAEAD(id uint16) bool {
	switch id {
	case m.ENCR_AES_CCM_8, m.ENCR_AES_CCM_12, m.ENCR_AES_CCM_16,
		m.ENCR_AES_GCM_8, m.ENCR_AES_GCM_12, m.ENCR_AES_GCM_16,
		m.ENCR_NULL_AUTH_AES_GMAC, m.ENCR_CHACHA20_POLY1305:
		return true
	}
	return false
}

// entry is a transform while a proposal is built.
type entry struct {
	typ  m.TransformType
	id   uint16
	bits int
}

// parseProposal parses one proposal string for IKE or ESP as
// proposal_create_from_string and check_proposal do, and then checks that
// ipsecstack implements every transform in it.
func parseProposal(proto m.ProtocolID, s string) (m.Proposal, error) {
	p, err := parseProposalStrongSwan(proto, s)
	if err != nil {
		return p, err
	}
	return p, supported(p)
}

// parseProposalStrongSwan is what strongSwan makes of s, before the check
// against what ipsecstack implements.
func parseProposalStrongSwan(proto m.ProtocolID, s string) (m.Proposal, error) {
	var es []entry
	for _, tok := range strings.Split(s, "-") {
		tok = strings.Trim(tok, " ")
		if tok == "" {
			continue // enumerator_create_token skips empty tokens
		}
		k, ok := keywords[tok]
		if !ok {
			return m.Proposal{}, fmt.Errorf("algorithm %q not recognized", tok)
		}
		if k.unsupported != "" {
			return m.Proposal{}, fmt.Errorf("algorithm %q: %s", tok, k.unsupported)
		}
		es = append(es, entry{k.typ, k.id, k.bits})
	}
	if len(es) == 0 {
		return m.Proposal{}, fmt.Errorf("empty proposal")
	}
	es, err := checkProposal(proto, es)
	if err != nil {
		return m.Proposal{}, err
	}
	return toProposal(proto, es), nil
}

func has(es []entry, t m.TransformType) bool {
	for _, e := range es {
		if e.typ == t {
			return true
		}
	}
	return false
}

func without(es []entry, drop func(entry) bool) []entry {
	var out []entry
	for _, e := range es {
		if !drop(e) {
			out = append(out, e)
		}
	}
	return out
}

// checkProposal is strongSwan's check_proposal for IKE and ESP.
func checkProposal(proto m.ProtocolID, es []entry) ([]entry, error) {
	if proto == m.ProtoIKE {
		if !has(es, m.TransformPRF) {
			for _, e := range es {
				if e.typ == m.TransformINTEG {
					if prf, ok := integPRF[e.id]; ok {
						es = append(es, entry{m.TransformPRF, prf, 0})
					}
				}
			}
		}
		if !has(es, m.TransformPRF) {
			return nil, fmt.Errorf("a PRF algorithm is mandatory in IKE proposals")
		}
		es = without(es, func(e entry) bool { return e.typ == m.TransformKE && e.id == m.KE_NONE })
		if !has(es, m.TransformKE) {
			return nil, fmt.Errorf("a key exchange method (DH group) is mandatory in IKE proposals")
		}
		if has(es, m.TransformESN) {
			return nil, fmt.Errorf("esn/noesn are for ESP proposals, not IKE")
		}
	} else {
		es = without(es, func(e entry) bool { return e.typ == m.TransformPRF })
	}
	anyEnc, anyAEAD, allAEAD := false, false, true
	for _, e := range es {
		if e.typ != m.TransformENCR {
			continue
		}
		anyEnc = true
		if isAEAD(e.id) {
			anyAEAD = true
		} else {
			allAEAD = false
		}
	}
	switch {
	case !anyEnc:
		return nil, fmt.Errorf("an encryption algorithm is mandatory in %s proposals", protoName(proto))
	case anyAEAD && !allAEAD:
		return nil, fmt.Errorf("classic and combined-mode (AEAD) encryption algorithms can't be in the same %s proposal", protoName(proto))
	case allAEAD:
		// With only AEADs there must be no integrity transform
		// (RFC 5282 §8); strongSwan drops any that were written.
		es = without(es, func(e entry) bool { return e.typ == m.TransformINTEG })
	case proto == m.ProtoIKE && !has(es, m.TransformINTEG):
		return nil, fmt.Errorf("an integrity algorithm is mandatory in IKE proposals with classic (non-AEAD) encryption")
	}
	if proto == m.ProtoESP && !has(es, m.TransformESN) {
		es = append(es, entry{m.TransformESN, m.ESN_NO, 0})
	}
	return es, nil
}

func protoName(p m.ProtocolID) string {
	if p == m.ProtoIKE {
		return "IKE"
	}
	return "ESP"
}

// toProposal orders the transforms as strongSwan encodes them
// (set_from_proposal_v2: ENCR, INTEG, PRF, KE, ESN), each type's in the
// order written.
func toProposal(proto m.ProtocolID, es []entry) m.Proposal {
	p := m.Proposal{Protocol: proto}
	for _, t := range []m.TransformType{m.TransformENCR, m.TransformINTEG, m.TransformPRF, m.TransformKE, m.TransformESN} {
		for _, e := range es {
			if e.typ != t {
				continue
			}
			tr := m.Transform{Type: e.typ, ID: e.id}
			if e.bits != 0 {
				tr.Attributes = []m.Attribute{m.KeyLengthAttr(e.bits)}
			}
			p.Transforms = append(p.Transforms, tr)
		}
	}
	return p
}

// supported checks every transform of p against what ipsecstack
// implements: ike/ikecrypto for IKE SAs and key exchanges, the data
// plane's table (xfrm/esp) for ESP.
func supported(p m.Proposal) error {
	for i := range p.Transforms {
		t := &p.Transforms[i]
		bits, _ := t.KeyLength()
		var err error
		switch t.Type {
		case m.TransformENCR:
			if p.Protocol == m.ProtoIKE {
				_, err = ikecrypto.LookupEncr(t.ID, bits)
			} else {
				err = espSupported(esp.KindEncryption, t.ID, bits)
			}
		case m.TransformINTEG:
			if p.Protocol == m.ProtoIKE {
				_, err = ikecrypto.LookupInteg(t.ID)
			} else {
				err = espSupported(esp.KindIntegrity, t.ID, 0)
			}
		case m.TransformPRF:
			_, err = ikecrypto.LookupPRF(t.ID)
		case m.TransformKE:
			if t.ID != m.KE_NONE && !ikecrypto.Supported(t.ID) {
				err = fmt.Errorf("key exchange method %d", t.ID)
			}
		}
		if err != nil {
			return fmt.Errorf("%s is not supported by ipsecstack for %s", transformName(*t), protoName(p.Protocol))
		}
	}
	return nil
}

// espSupported looks an ENCR or INTEG transform up in the data plane's
// algorithm table; AEADs are ENCR transforms there too.
func espSupported(kind esp.Kind, id uint16, bits int) error {
	for _, a := range esp.Algorithms() {
		if a.IKEv2ID != id {
			continue
		}
		if kind == esp.KindIntegrity && a.Kind != esp.KindIntegrity || kind != esp.KindIntegrity && a.Kind == esp.KindIntegrity {
			continue
		}
		if bits == 0 {
			return nil
		}
		for _, ks := range a.KeySizes {
			if ks*8 == bits {
				return nil
			}
		}
	}
	return fmt.Errorf("not in the data plane")
}

// transformNames are strongSwan's names (as `swanctl --list-conns` prints
// them) for the transforms ipsecstack knows.
var transformNames = map[m.TransformType]map[uint16]string{
	m.TransformENCR: {
		2: "DES_CBC", m.ENCR_3DES: "3DES_CBC", 6: "CAST_CBC", m.ENCR_NULL: "NULL",
		m.ENCR_AES_CBC: "AES_CBC", m.ENCR_AES_CTR: "AES_CTR",
		m.ENCR_AES_CCM_8: "AES_CCM_8", m.ENCR_AES_CCM_12: "AES_CCM_12", m.ENCR_AES_CCM_16: "AES_CCM_16",
		m.ENCR_AES_GCM_8: "AES_GCM_8", m.ENCR_AES_GCM_12: "AES_GCM_12", m.ENCR_AES_GCM_16: "AES_GCM_16",
		m.ENCR_NULL_AUTH_AES_GMAC: "NULL_AES_GMAC", m.ENCR_CHACHA20_POLY1305: "CHACHA20_POLY1305",
	},
	m.TransformINTEG: {
		1: "HMAC_MD5_96", m.AUTH_HMAC_SHA1_96: "HMAC_SHA1_96", m.AUTH_AES_XCBC_96: "AES_XCBC_96",
		m.AUTH_AES_CMAC_96: "AES_CMAC_96", m.AUTH_HMAC_SHA2_256_128: "HMAC_SHA2_256_128",
		m.AUTH_HMAC_SHA2_384_192: "HMAC_SHA2_384_192", m.AUTH_HMAC_SHA2_512_256: "HMAC_SHA2_512_256",
	},
	m.TransformPRF: {
		m.PRF_HMAC_MD5: "PRF_HMAC_MD5", m.PRF_HMAC_SHA1: "PRF_HMAC_SHA1", m.PRF_AES128_XCBC: "PRF_AES128_XCBC",
		m.PRF_HMAC_SHA2_256: "PRF_HMAC_SHA2_256", m.PRF_HMAC_SHA2_384: "PRF_HMAC_SHA2_384",
		m.PRF_HMAC_SHA2_512: "PRF_HMAC_SHA2_512", m.PRF_AES128_CMAC: "PRF_AES128_CMAC",
	},
	m.TransformKE: {
		m.KE_NONE: "KE_NONE", 1: "MODP_768", 2: "MODP_1024", 5: "MODP_1536", m.KE_MODP2048: "MODP_2048",
		m.KE_MODP3072: "MODP_3072", m.KE_MODP4096: "MODP_4096", 17: "MODP_6144", 18: "MODP_8192",
		m.KE_ECP256: "ECP_256", m.KE_ECP384: "ECP_384", m.KE_ECP521: "ECP_521",
		22: "MODP_1024_160", 23: "MODP_2048_224", 24: "MODP_2048_256", 25: "ECP_192", 26: "ECP_224",
		27: "ECP_224_BP", 28: "ECP_256_BP", 29: "ECP_384_BP", 30: "ECP_512_BP",
		m.KE_CURVE25519: "CURVE_25519", m.KE_CURVE448: "CURVE_448",
	},
	m.TransformESN: {m.ESN_NO: "NO_EXT_SEQ", m.ESN_YES: "EXT_SEQ"},
}

// transformName is the transform as strongSwan prints it, AES_CBC_128.
func transformName(t m.Transform) string {
	n, ok := transformNames[t.Type][t.ID]
	if !ok {
		n = fmt.Sprintf("UNKNOWN_%d_%d", t.Type, t.ID)
	}
	if b, ok := t.KeyLength(); ok {
		n += fmt.Sprintf("_%d", b)
	}
	return n
}

// ProposalString formats a proposal as `swanctl --list-conns` does:
// the transforms' names joined by "/", in wire order.
func ProposalString(p m.Proposal) string {
	names := make([]string, len(p.Transforms))
	for i, t := range p.Transforms {
		names[i] = transformName(t)
	}
	return strings.Join(names, "/")
}
