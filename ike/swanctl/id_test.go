package swanctl

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	m "github.com/ipsecstack/ipsecstack/ike/message"
)

// TestParseID uses the string_data vectors of strongSwan 5.9.8's
// src/libstrongswan/tests/suites/test_identification.c (test_from_string).
// Where IKEv2 has no encoding (IKEv1 subnet/range types, xmppaddr, type
// 99) or the result could not go on the wire (an empty FQDN), ipsecstack
// rejects the identity instead; those rows have wantErr.
func TestParseID(t *testing.T) {
	s := func(x string) []byte { return []byte(x) }
	h := func(x string) []byte { b, _ := hex.DecodeString(x); return b }
	tests := []struct {
		in      string
		typ     m.IDType
		data    []byte
		wantErr string
	}{
		{"", 0, nil, ""},
		{"%any", 0, nil, ""},
		{"%any6", 0, nil, ""},
		{"0.0.0.0", 0, nil, ""},
		{"0::0", 0, nil, ""},
		{"::", 0, nil, ""},
		{"*", 0, nil, ""},
		{"any", m.ID_FQDN, s("any"), ""},
		{"any6", m.ID_FQDN, s("any6"), ""},
		{"0", m.ID_FQDN, s("0"), ""},
		{"**", m.ID_FQDN, s("**"), ""},
		{"192.168.1.1", m.ID_IPV4_ADDR, h("c0a80101"), ""},
		{"192.168.", m.ID_FQDN, s("192.168."), ""},
		{".", m.ID_FQDN, s("."), ""},
		{"192.168.1.1/33", m.ID_FQDN, s("192.168.1.1/33"), ""},
		{"192.168.1.1/32", 0, nil, "IKEv1 subnet or range identity"},
		{"0.0.0.0/0", 0, nil, "IKEv1 subnet or range identity"},
		{"192.168.1.0-192.168.1.40", 0, nil, "IKEv1 subnet or range identity"},
		{"192.168.1.40-192.168.1.0", m.ID_FQDN, s("192.168.1.40-192.168.1.0"), ""},
		{"fec0::1", m.ID_IPV6_ADDR, h("fec00000000000000000000000000001"), ""},
		{"fec0::", m.ID_IPV6_ADDR, h("fec00000000000000000000000000000"), ""},
		{"fec0:", m.ID_KEY_ID, s("fec0:"), ""},
		{":", m.ID_KEY_ID, s(":"), ""},
		{"fec0::1/129", m.ID_KEY_ID, s("fec0::1/129"), ""},
		{"fec0::1/128", 0, nil, "IKEv1 subnet or range identity"},
		{"fec0::1-fec0::4fff", 0, nil, "IKEv1 subnet or range identity"},
		{"fec0::4fff-fec0::1", m.ID_KEY_ID, s("fec0::4fff-fec0::1"), ""},
		{"fec0::1-", m.ID_KEY_ID, s("fec0::1-"), ""},
		{"alice@strongswan.org", m.ID_RFC822_ADDR, s("alice@strongswan.org"), ""},
		{"alice@strongswan", m.ID_RFC822_ADDR, s("alice@strongswan"), ""},
		{"alice@", m.ID_RFC822_ADDR, s("alice@"), ""},
		{"alice", m.ID_FQDN, s("alice"), ""},
		{"@", 0, nil, "empty FQDN identity"},
		{" @", m.ID_RFC822_ADDR, s(" @"), ""},
		{"@strongswan.org", m.ID_FQDN, s("strongswan.org"), ""},
		{"@#deadbeef", m.ID_KEY_ID, h("deadbeef"), ""},
		{"@#deadbee", m.ID_KEY_ID, h("0deadbee"), ""},
		{"foo=bar", m.ID_KEY_ID, s("foo=bar"), ""},
		{"foo=", m.ID_KEY_ID, s("foo="), ""},
		{"=bar", m.ID_KEY_ID, s("=bar"), ""},
		{"C=", m.ID_DER_ASN1_DN, h("300b3109300706035504061300"), ""},
		{"C=CH", m.ID_DER_ASN1_DN, h("300d310b3009060355040613024348"), ""},
		{"C=CH,", m.ID_DER_ASN1_DN, h("300d310b3009060355040613024348"), ""},
		{"C=CH, ", m.ID_DER_ASN1_DN, h("300d310b3009060355040613024348"), ""},
		{"C=CH, O", m.ID_KEY_ID, s("C=CH, O"), ""},
		{"IPv4:#c0a80101", m.ID_IPV4_ADDR, h("c0a80101"), ""},
		{"email:tester", m.ID_RFC822_ADDR, s("tester"), ""},
		{"xmppaddr:bob@strongswan.org", 0, nil, "identity type xmppaddr has no IKEv2 encoding"},
		{"{1}:#c0a80101", m.ID_IPV4_ADDR, h("c0a80101"), ""},
		{"{0x02}:tester", m.ID_FQDN, s("tester"), ""},
		{"{99}:somedata", 0, nil, "identity type 99 is not an IKEv2 identity type"},
		// Beyond test_identification.c.
		{"@@carol", m.ID_RFC822_ADDR, s("carol"), ""},
		{"keyid:foo", m.ID_KEY_ID, s("foo"), ""},
		{"fqdn:moon", m.ID_FQDN, s("moon"), ""},
		{"ipv4:10.0.0.1", m.ID_IPV4_ADDR, h("0a000001"), ""}, // strongSwan keeps the text here
		{"ipv6:fec0::1", m.ID_IPV6_ADDR, h("fec00000000000000000000000000001"), ""},
		{"/C=CH/CN=x", m.ID_DER_ASN1_DN, h("3019310b3009060355040613024348310a30080603550403130178"), ""},
		{"CN=\x01", m.ID_DER_ASN1_DN, h("300c310a300806035504030c0101"), ""},               // not printable: UTF8String
		{"E=a@b", m.ID_DER_ASN1_DN, h("30143112301006092a864886f70d0109011603614062"), ""}, // IA5String
		{"C=CH,,CN=x", m.ID_KEY_ID, s("C=CH,,CN=x"), ""},
	}
	for _, tt := range tests {
		id, err := parseID(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: error %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if id.Type != tt.typ || !bytes.Equal(id.Data, tt.data) {
			t.Errorf("%q: got type %d data %x, want type %d data %x", tt.in, id.Type, id.Data, tt.typ, tt.data)
		}
	}
}
