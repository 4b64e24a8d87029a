package swanctl

import (
	"strings"
	"testing"

	m "github.com/ipsecstack/ipsecstack/ike/message"
)

// TestProposalStrongSwan uses the IKE and ESP rows of create_data in
// strongSwan 5.9.8's src/libstrongswan/tests/suites/test_proposal.c: what
// proposal_create_from_string makes of a string, before ipsecstack's own
// support check ("" = strongSwan rejects it).
func TestProposalStrongSwan(t *testing.T) {
	tests := []struct {
		proto m.ProtocolID
		in    string
		want  string
	}{
		{m.ProtoIKE, "", ""},
		{m.ProtoIKE, "sha256", ""},
		{m.ProtoIKE, "sha256-modp3072", ""},
		{m.ProtoIKE, "null-sha256-modp3072", "NULL/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_3072"},
		{m.ProtoIKE, "aes128", ""},
		{m.ProtoIKE, "aes128-sha256", ""},
		{m.ProtoIKE, "aes128-sha256-none", ""},
		{m.ProtoIKE, "aes128-prfsha256", ""},
		{m.ProtoIKE, "aes128-prfsha256-modp2048", ""},
		{m.ProtoIKE, "aes128-sha256-modp3072", "AES_CBC_128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_3072"},
		{m.ProtoIKE, "aes128-sha256-prfsha384-modp3072", "AES_CBC_128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_384/MODP_3072"},
		{m.ProtoIKE, "aes128gcm16-modp3072", ""},
		{m.ProtoIKE, "aes128gcm16-prfsha256-modp3072", "AES_GCM_16_128/PRF_HMAC_SHA2_256/MODP_3072"},
		{m.ProtoIKE, "aes128gcm16-sha256-modp3072", "AES_GCM_16_128/PRF_HMAC_SHA2_256/MODP_3072"},
		{m.ProtoIKE, "aes128gcm16-aes128-modp3072", ""},
		{m.ProtoIKE, "aes128gcm16-aes128-sha256-modp3072", ""},
		{m.ProtoESP, "", ""},
		{m.ProtoESP, "sha256", ""},
		{m.ProtoESP, "aes128-sha256", "AES_CBC_128/HMAC_SHA2_256_128/NO_EXT_SEQ"},
		{m.ProtoESP, "aes128-sha256-esn", "AES_CBC_128/HMAC_SHA2_256_128/EXT_SEQ"},
		{m.ProtoESP, "aes128-sha256-noesn", "AES_CBC_128/HMAC_SHA2_256_128/NO_EXT_SEQ"},
		{m.ProtoESP, "aes128-sha256-esn-noesn", "AES_CBC_128/HMAC_SHA2_256_128/EXT_SEQ/NO_EXT_SEQ"},
		{m.ProtoESP, "aes128-sha256-prfsha256-modp3072", "AES_CBC_128/HMAC_SHA2_256_128/MODP_3072/NO_EXT_SEQ"},
		{m.ProtoESP, "aes128gcm16-aes128-sha256-modp3072", ""},
		{m.ProtoESP, "aes128gmac", "NULL_AES_GMAC_128/NO_EXT_SEQ"},
	}
	for _, tt := range tests {
		p, err := parseProposalStrongSwan(tt.proto, tt.in)
		got := ""
		if err == nil {
			got = ProposalString(p)
		}
		if got != tt.want {
			t.Errorf("%s %q: got %q (%v), want %q", protoName(tt.proto), tt.in, got, err, tt.want)
		}
	}
}

// TestProposalSupport: what ipsecstack implements is accepted, in the
// wire layout (Key Length attributes, no attribute for ChaCha20), and the
// rest is rejected by name.
func TestProposalSupport(t *testing.T) {
	tests := []struct {
		proto m.ProtocolID
		in    string
		want  string // ProposalString, or "error: substring"
	}{
		{m.ProtoIKE, "aes256gcm16-prfsha384-ecp384", "AES_GCM_16_256/PRF_HMAC_SHA2_384/ECP_384"},
		{m.ProtoIKE, "aes128-sha256-modp2048", "AES_CBC_128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048"},
		{m.ProtoIKE, "chacha20poly1305-prfsha256-x25519", "CHACHA20_POLY1305/PRF_HMAC_SHA2_256/CURVE_25519"},
		{m.ProtoIKE, "aes-aesxcbc-prfaescmac-curve25519", "AES_CBC_128/AES_XCBC_96/PRF_AES128_CMAC/CURVE_25519"},
		{m.ProtoIKE, "aes192gcm12-prfsha1-ecp256", "AES_GCM_12_192/PRF_HMAC_SHA1/ECP_256"},
		{m.ProtoIKE, "aes128-md5-modp2048", "error: HMAC_MD5_96 is not supported by ipsecstack for IKE"},
		{m.ProtoIKE, "aes128-sha256-modp1024", "error: MODP_1024 is not supported"},
		{m.ProtoIKE, "aes128ccm16-prfsha256-x25519", "error: AES_CCM_16_128 is not supported"},
		{m.ProtoIKE, "chacha20poly1305compat-prfsha256-x25519", "error: pre-RFC 7634"},
		{m.ProtoESP, "aes128ccm8", "AES_CCM_8_128/NO_EXT_SEQ"},
		{m.ProtoESP, "aes256ctr-aescmac-md5", "AES_CTR_256/AES_CMAC_96/HMAC_MD5_96/NO_EXT_SEQ"},
		{m.ProtoESP, "3des-sha1", "3DES_CBC/HMAC_SHA1_96/NO_EXT_SEQ"},
		{m.ProtoESP, "null-sha256", "NULL/HMAC_SHA2_256_128/NO_EXT_SEQ"},
		{m.ProtoESP, "aes128gcm16-x25519-ecp256-none", "AES_GCM_16_128/CURVE_25519/ECP_256/KE_NONE/NO_EXT_SEQ"},
		{m.ProtoESP, "aes128gcm16-modp4096", "error: MODP_4096 is not supported by ipsecstack for ESP"},
		{m.ProtoESP, "cast128-sha256", "error: CAST_CBC_128 is not supported"},
		{m.ProtoESP, "aes128-sha256_96", "error: a strongSwan private-use algorithm"},
	}
	for _, tt := range tests {
		p, err := parseProposal(tt.proto, tt.in)
		if e, ok := strings.CutPrefix(tt.want, "error: "); ok {
			if err == nil || !strings.Contains(err.Error(), e) {
				t.Errorf("%q: error %v, want %q", tt.in, err, e)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if got := ProposalString(p); got != tt.want {
			t.Errorf("%q: %q, want %q", tt.in, got, tt.want)
		}
		for _, tr := range p.Transforms {
			kl, has := tr.KeyLength()
			if tr.Type == m.TransformENCR && tr.ID == m.ENCR_CHACHA20_POLY1305 && has {
				t.Errorf("%q: ChaCha20-Poly1305 with a Key Length attribute (RFC 7634 forbids it)", tt.in)
			}
			if has && tr.Type != m.TransformENCR {
				t.Errorf("%q: Key Length %d on transform type %d", tt.in, kl, tr.Type)
			}
		}
	}
}

// TestDefaults: strongSwan's defaults (defaults.go) with what ipsecstack
// lacks left out, and the ESP orders of vici (no esp_proposals: AEAD
// first) and of the "default" keyword (classic first).
func TestDefaults(t *testing.T) {
	ike := DefaultIKEProposals()
	want := []string{
		"AES_CBC_128/AES_CBC_192/AES_CBC_256/HMAC_SHA2_256_128/HMAC_SHA2_384_192/HMAC_SHA2_512_256/AES_XCBC_96/HMAC_SHA1_96/" +
			"PRF_HMAC_SHA2_256/PRF_HMAC_SHA2_384/PRF_HMAC_SHA2_512/PRF_AES128_XCBC/PRF_AES128_CMAC/PRF_HMAC_SHA1/CURVE_25519/ECP_256/ECP_384/MODP_2048",
		"AES_GCM_16_128/AES_GCM_16_192/AES_GCM_16_256/CHACHA20_POLY1305/AES_GCM_12_128/AES_GCM_12_192/AES_GCM_12_256/" +
			"PRF_HMAC_SHA2_256/PRF_HMAC_SHA2_384/PRF_HMAC_SHA2_512/PRF_AES128_XCBC/PRF_AES128_CMAC/PRF_HMAC_SHA1/CURVE_25519/ECP_256/ECP_384/MODP_2048",
	}
	if len(ike) != 2 || ProposalString(ike[0]) != want[0] || ProposalString(ike[1]) != want[1] || ike[0].Num != 1 || ike[1].Num != 2 {
		t.Errorf("default IKE proposals\n%v\nwant\n%v", ike, want)
	}
	var dropped []string
	for _, s := range strongswanDefaultIKE {
		_, d := fromNames(m.ProtoIKE, s)
		dropped = append(dropped, d...)
	}
	t.Logf("left out of strongSwan's default IKE proposals: %v", dropped)
	esp := DefaultESPProposals()
	if len(esp) != 2 || ProposalString(esp[0]) != "AES_GCM_16_128/AES_GCM_16_192/AES_GCM_16_256/NO_EXT_SEQ" ||
		ProposalString(esp[1]) != "AES_CBC_128/AES_CBC_192/AES_CBC_256/HMAC_SHA2_256_128/HMAC_SHA2_384_192/HMAC_SHA2_512_256/HMAC_SHA1_96/AES_XCBC_96/NO_EXT_SEQ" {
		t.Errorf("default ESP proposals %v", esp)
	}
	kw := defaultESPKeyword()
	if ProposalString(kw[0]) != ProposalString(esp[1]) || ProposalString(kw[1]) != ProposalString(esp[0]) {
		t.Errorf("esp_proposals = default: %v", kw)
	}
	// The defaults are fresh copies: changing one must not change the next.
	ike[0].Transforms[0].ID = 0
	if DefaultIKEProposals()[0].Transforms[0].ID != m.ENCR_AES_CBC {
		t.Error("DefaultIKEProposals shares its transforms")
	}
}
