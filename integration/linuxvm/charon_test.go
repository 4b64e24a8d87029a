package linuxvm

import (
	"net/netip"
	"reflect"
	"testing"
)

// TestParseSAs reads swanctl --list-sas as strongSwan 5.9.8's swanctl
// printed it in the guest (TestLinuxGuestCharon, transport IPv6 with the
// guest initiating; a second IKE SA with a UDP-encapsulated tunnel child
// and two selectors per side, as charon prints them with encap = yes).
func TestParseSAs(t *testing.T) {
	text := `host: #1, ESTABLISHED, IKEv2, 2c0a27011904626f_i* d105b55d7421c8d7_r
  local  'charon@guest.test' @ 2001:db8:1::2[4500]
  remote 'ipsecstack@host.test' @ 2001:db8:1::1[4500]
  AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519
  established 2s ago, rekeying in 13463s
  c: #1, reqid 1, INSTALLED, TRANSPORT, ESP:AES_CBC-256/HMAC_SHA2_256_128
    installed 2s ago, rekeying in 3422s, expires in 3958s
    in  cf2f8f0c, 1087088 bytes,  1196 packets,     0s ago
    out 7ca44f62, 1092676 bytes,  1371 packets,     0s ago
    local  2001:db8:1::2/128
    remote 2001:db8:1::1/128
gw: #2, ESTABLISHED, IKEv2, 75b3a15f06bd9895_i 36d2840903393ddb_r*
  local  'charon@guest.test' @ 192.0.2.2[4500]
  remote 'ipsecstack@host.test' @ 192.0.2.1[4500]
  AES_GCM_16-256/PRF_HMAC_SHA2_384/ECP_384
  established 0s ago, rekeying in 13041s
  net: #2, reqid 2, INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-128
    installed 0s ago, rekeying in 3360s, expires in 3960s
    in  c5586706,      0 bytes,     0 packets
    out 6af35dcb,      0 bytes,     0 packets
    local  203.0.113.2/32 10.0.0.0/24
    remote 198.51.100.1/32 10.1.0.0/24
`
	want := []IKESA{{
		Name: "host", UniqueID: "#1", State: "ESTABLISHED", Version: "IKEv2",
		SPIi: 0x2c0a27011904626f, SPIr: 0xd105b55d7421c8d7, LocalInitiator: true,
		LocalID: "charon@guest.test", RemoteID: "ipsecstack@host.test",
		Local: netip.MustParseAddrPort("[2001:db8:1::2]:4500"), Remote: netip.MustParseAddrPort("[2001:db8:1::1]:4500"),
		Proposal: "AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519",
		Children: []ChildSA{{Name: "c", UniqueID: "#1", ReqID: 1, State: "INSTALLED", Mode: "TRANSPORT", Protocol: "ESP",
			Proposal: "AES_CBC-256/HMAC_SHA2_256_128", SPIIn: 0xcf2f8f0c, SPIOut: 0x7ca44f62,
			BytesIn: 1087088, PacketsIn: 1196, BytesOut: 1092676, PacketsOut: 1371,
			LocalTS: []string{"2001:db8:1::2/128"}, RemoteTS: []string{"2001:db8:1::1/128"}}},
	}, {
		Name: "gw", UniqueID: "#2", State: "ESTABLISHED", Version: "IKEv2",
		SPIi: 0x75b3a15f06bd9895, SPIr: 0x36d2840903393ddb,
		LocalID: "charon@guest.test", RemoteID: "ipsecstack@host.test",
		Local: netip.MustParseAddrPort("192.0.2.2:4500"), Remote: netip.MustParseAddrPort("192.0.2.1:4500"),
		Proposal: "AES_GCM_16-256/PRF_HMAC_SHA2_384/ECP_384",
		Children: []ChildSA{{Name: "net", UniqueID: "#2", ReqID: 2, State: "INSTALLED", Mode: "TUNNEL", Encap: true, Protocol: "ESP",
			Proposal: "AES_GCM_16-128", SPIIn: 0xc5586706, SPIOut: 0x6af35dcb,
			LocalTS: []string{"203.0.113.2/32", "10.0.0.0/24"}, RemoteTS: []string{"198.51.100.1/32", "10.1.0.0/24"}}},
	}}
	got, err := ParseSAs(text)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if sas, err := ParseSAs(""); err != nil || len(sas) != 0 {
		t.Errorf("empty listing: %v, %v", sas, err)
	}
	if _, err := ParseSAs("  c: #1, reqid 1, INSTALLED, TUNNEL, ESP:AES_GCM_16-128\n"); err == nil {
		t.Error("a CHILD SA outside an IKE SA: no error")
	}
}
