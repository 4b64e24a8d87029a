package main

import (
	"errors"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestParseGatewayFlags: --lan-addr belongs to the --lan before it, --tun
// with its addresses, forwarding on with either, and --route dev=NAME
// naming the NIC in ID order (--link 1, the --lan flags, then --tun).
func TestParseGatewayFlags(t *testing.T) {
	c, err := parseRunFlags(strings.Fields("--link afpacket:wan0 --addr 192.0.2.1/24 "+
		"--lan afpacket:lan0 --lan-addr 10.1.0.1/24 --lan-addr fd00:a::1/64 "+
		"--route 10.9.0.0/16=10.1.0.254 --lan tap:lan1 --lan-addr 10.3.0.1/24 "+
		"--tun-addr 10.5.0.1/24 --tun ipsec0 --tun-mtu 1400 --clamp-mss "+
		"--route 10.6.0.0/24=,dev=ipsec0 --route fd00:b::/64=,src=fd00:a::1,dev=lan0 --route 0.0.0.0/0=192.0.2.254"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []lanSpec{
		{"afpacket", "lan0", []netip.Prefix{netip.MustParsePrefix("10.1.0.1/24"), netip.MustParsePrefix("fd00:a::1/64")}},
		{"tap", "lan1", []netip.Prefix{netip.MustParsePrefix("10.3.0.1/24")}},
	}
	if !slices.EqualFunc(c.LANs, want, func(a, b lanSpec) bool {
		return a.Kind == b.Kind && a.Name == b.Name && slices.Equal(a.Addrs, b.Addrs)
	}) {
		t.Errorf("LANs %+v, want %+v", c.LANs, want)
	}
	if c.Tun == nil || c.Tun.Name != "ipsec0" || c.Tun.MTU != 1400 || !slices.Equal(c.Tun.Addrs, []netip.Prefix{netip.MustParsePrefix("10.5.0.1/24")}) {
		t.Errorf("Tun %+v", c.Tun)
	}
	if !c.Forwarding || !c.ClampMSS {
		t.Errorf("Forwarding %v ClampMSS %v, want both", c.Forwarding, c.ClampMSS)
	}
	for i, w := range []struct {
		dev string
		nic int
	}{{"", 0}, {"ipsec0", 4}, {"lan0", 2}, {"", 0}} {
		if r := c.Routes[i]; r.Dev != w.dev || r.NIC != w.nic {
			t.Errorf("route %d %+v: want dev %q NIC %d", i, r, w.dev, w.nic)
		}
	}
	if r := c.Routes[2]; r.Src != netip.MustParseAddr("fd00:a::1") {
		t.Errorf("route 2 src %v", r.Src)
	}

	// Without gateway sides: no forwarding, as before.
	if c, err := parseRunFlags(strings.Fields("--link tap:x --addr 192.0.2.1/24"), io.Discard); err != nil || c.Forwarding || c.LANs != nil || c.Tun != nil {
		t.Errorf("plain run: %v %+v", err, c)
	}
	// --tun alone turns forwarding on.
	if c, err := parseRunFlags(strings.Fields("--link tap:x --addr 192.0.2.1/24 --tun t0 --tun-addr fd00:5::1/64"), io.Discard); err != nil || !c.Forwarding || c.Tun.MTU != 0 {
		t.Errorf("--tun only: %v %+v", err, c)
	}

	base := "--link afpacket:wan0 --addr 192.0.2.1/24 "
	for _, tc := range []struct{ args, want string }{
		{"--lan-addr 10.1.0.1/24 --lan afpacket:lan0", "no --lan before it"},
		{"--lan afpacket:lan0", "no --lan-addr after it"},
		{"--lan afpacket:lan0 --lan afpacket:lan1 --lan-addr 10.1.0.1/24", "lan0: no --lan-addr"},
		{"--lan bridge:br0 --lan-addr 10.1.0.1/24", "want afpacket:IFACE or tap:NAME"},
		{"--lan lan0 --lan-addr 10.1.0.1/24", "want afpacket:IFACE or tap:NAME"},
		{"--lan afpacket: --lan-addr 10.1.0.1/24", "want afpacket:IFACE or tap:NAME"},
		{"--lan afpacket:a-name-that-is-too-long --lan-addr 10.1.0.1/24", "not a valid interface name"},
		{"--lan afpacket:lan0 --lan-addr 10.1.0.1", "want an address with its prefix length"},
		{"--lan afpacket:lan0 --lan-addr 224.0.0.1/24", "not a unicast address"},
		{"--lan afpacket:wan0 --lan-addr 10.1.0.1/24", "given as two sides"},
		{"--lan afpacket:l0 --lan-addr 10.1.0.1/24 --tun l0 --tun-addr 10.2.0.1/24", "given as two sides"},
		{"--tun-addr 10.5.0.1/24", "without --tun"},
		{"--tun-mtu 1400", "--tun-mtu without --tun"},
		{"--tun t0", "no --tun-addr"},
		{"--tun t0 --tun t1 --tun-addr 10.5.0.1/24", "one TUN device"},
		{"--tun t/0 --tun-addr 10.5.0.1/24", "not a valid interface name"},
		{"--tun t0 --tun-addr 10.5.0.1/24 --tun-mtu 100", "want 576 to 65535"},
		{"--tun t0 --tun-addr fd00::1/64 --tun-mtu 1000", "1280 or more"},
		{"--clamp-mss", "give --lan or --tun"},
		{"--route 10.0.0.0/8=,dev=eth9", "neither the --link nor"},
		{"--route 10.0.0.0/8=,dev=wan0,dev=wan0", "each at most once"},
		{"--route 10.0.0.0/8=,mtu=1400", "want src=ADDR or dev=NAME"},
	} {
		_, err := parseRunFlags(strings.Fields(base+tc.args), io.Discard)
		if !errors.Is(err, errUsage) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want a one-line usage error with %q", tc.args, err, tc.want)
		}
	}
}

func TestTunMTUFor(t *testing.T) {
	for _, c := range []struct{ wire, want uint32 }{{1500, 1380}, {9000, 8880}, {1400, 1280}, {1280, 1280}, {0, 1280}} {
		if got := tunMTUFor(c.wire); got != c.want {
			t.Errorf("tunMTUFor(%d) = %d, want %d", c.wire, got, c.want)
		}
	}
}
