package swanctl

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/ipsecstack/ipsecstack/ike/config"
	m "github.com/ipsecstack/ipsecstack/ike/message"
)

// TestParseTS follows vici_config.c's parse_ts (strongSwan 5.9.8); the
// printed forms in want are strongSwan's %R, as charon logged them for
// testdata/oracle/features.conf.
func TestParseTS(t *testing.T) {
	tests := []struct {
		in, want string // want: TSString, or "error: ..."
	}{
		{"10.1.0.0/16", "10.1.0.0/16"},
		{"10.1.2.3/24", "10.1.2.0/24"}, // host bits cleared
		{"10.1.2.3", "10.1.2.3/32"},
		{"%any", "0.0.0.0/32"}, // host_create_from_subnet: %any is 0.0.0.0, a /32
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"::/0[udp]", "::/0[udp]"},
		{"fec0::1-fec0::ff[sctp]", "fec0::1..fec0::ff[sctp]"},
		{"10.1.0.5 - 10.1.0.9", "10.1.0.5..10.1.0.9"},
		{"10.1.0.0/16[tcp/80]", "10.1.0.0/16[tcp/80]"},
		{"10.1.0.0/16[tcp/http]", "10.1.0.0/16[tcp/80]"},
		{"10.2.0.1[udp/1000-2000]", "10.2.0.1/32[udp/1000-2000]"},
		{"10.3.0.0/24[tcp/opaque]", "10.3.0.0/24[tcp/OPAQUE]"},
		{"10.3.0.0/24[6/any]", "10.3.0.0/24[tcp]"},
		{"10.3.0.0/24[any/53]", "10.3.0.0/24[0/53]"},
		{"fd00::/64[icmp/2048]", "fd00::/64[icmp/2048]"},
		{"dynamic", "dynamic"},
		{"dynamic[tcp/https]", "dynamic[tcp/443]"},
		{"10.0.0.0/33", "error: bad prefix length"},
		{"10.0.0.0/8[tcp", "error: missing ']'"},
		{"10.0.0.0/8[tcp/80-x]", "error: bad port range"},
		{"10.0.0.0/8[300]", "error: unknown protocol"},
		{"moon", "error: is not an IP address"},
		{"fe80::1%eth0", "error: is not an IP address"},
		{"::ffff:10.0.0.1", "error: IPv4-mapped"},
	}
	for _, tt := range tests {
		ts, err := parseTS(tt.in)
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
		if got := TSString(ts); got != tt.want {
			t.Errorf("%q: %q, want %q", tt.in, got, tt.want)
		}
		if tt.in == "dynamic" && !config.IsDynamic(ts) {
			t.Errorf("dynamic is not IsDynamic: %+v", ts)
		}
	}
	// The wire form of a range: TS_IPV4_ADDR_RANGE with both ends.
	ts, _ := parseTS("10.1.0.0/16[tcp/80]")
	want := m.TrafficSelector{TSType: m.TS_IPV4_ADDR_RANGE, IPProto: 6, StartPort: 80, EndPort: 80,
		Start: netip.MustParseAddr("10.1.0.0"), End: netip.MustParseAddr("10.1.255.255")}
	if !equalTS([]m.TrafficSelector{ts}, []m.TrafficSelector{want}) {
		t.Errorf("%+v, want %+v", ts, want)
	}
}
