package xfrm

import (
	"bytes"
	"net/netip"
	"testing"
)

// TestForwardedInnerPacketUsesFwdPolicies: once SetLocal says which
// addresses are the host's, a decapsulated packet to another address is
// decided by the fwd policies, as Linux's ip_forward checks
// XFRM_POLICY_FWD (RFC 4301 §5.2), with the in-policy rules and counters.
// The receiver's in policy authorises 10.1/16 -> 10.2/16 through the
// tunnel: before fwd policies were consulted, it let every forwarded
// packet through, whatever the fwd policies said.
func TestForwardedInnerPacketUsesFwdPolicies(t *testing.T) {
	tmpl := Template{Proto: ProtoESP, Mode: ModeTunnel, Src: tunPeer, Dst: tunUs, Level: LevelRequire}
	other := tmpl
	other.Src = netip.MustParseAddr("192.0.2.99")
	sel := Selector{Src: pfx("10.1.0.0/16"), Dst: pfx("10.2.0.0/16")}
	for _, c := range []struct {
		name    string
		pols    []*Policy
		dst     string // inner destination; 10.2.0.1 is the host's own
		pass    bool
		counter string
	}{
		{"no fwd policy: tunnel output rejected", nil, "10.2.0.7", false, "XfrmInNoPols"},
		{"fwd protect through this tunnel", []*Policy{{Dir: DirFwd, Action: ActionProtect, Sel: sel, Templates: []Template{tmpl}}},
			"10.2.0.7", true, ""},
		{"fwd discard", []*Policy{{Dir: DirFwd, Action: ActionDiscard, Sel: sel}}, "10.2.0.7", false, "XfrmInPolBlock"},
		{"fwd bypass: a tunnel was used", []*Policy{{Dir: DirFwd, Action: ActionBypass, Sel: sel}}, "10.2.0.7", false, "XfrmInTmplMismatch"},
		{"fwd protect through another tunnel", []*Policy{{Dir: DirFwd, Action: ActionProtect, Sel: sel, Templates: []Template{other}}},
			"10.2.0.7", false, "XfrmInTmplMismatch"},
		{"to the host itself: the in policy decides", []*Policy{{Dir: DirFwd, Action: ActionDiscard, Sel: sel}}, "10.2.0.1", true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := tunnelEngine(t)
			e.SetLocal(func(a netip.Addr) bool { return a == tunUs || a == netip.MustParseAddr("10.2.0.1") })
			for _, p := range c.pols {
				if _, err := e.AddPolicy(p); err != nil {
					t.Fatal(err)
				}
			}
			in := inner4("10.1.0.5", c.dst, 0)
			got := e.Input(outer4(0, 50), ProtoESP, sealTunnel(t, e, 1, innerIPv4, in), HeapAllocator{})
			if pass := bytes.Equal(got, in); pass != c.pass {
				t.Fatalf("passed %v, want %v; stats %v", pass, c.pass, e.Stats.Snapshot())
			}
			for _, st := range e.Stats.Snapshot() {
				want := uint64(0)
				if st.Name == c.counter {
					want = 1
				}
				if st.Value != want {
					t.Errorf("%s = %d, want %d", st.Name, st.Value, want)
				}
			}
		})
	}
}

// TestCheckForwardOpaqueFragment: a non-initial fragment to forward, in
// clear, that a port-specific protect fwd policy may cover is rejected
// (XfrmInTmplMismatch): only its ports could tell (RFC 4301 §7).
func TestCheckForwardOpaqueFragment(t *testing.T) {
	e := NewEngine()
	defer e.Close()
	if _, err := e.AddPolicy(&Policy{Dir: DirFwd, Action: ActionProtect,
		Sel:       Selector{Src: pfx("10.1.0.0/16"), Dst: pfx("10.2.0.0/16"), Proto: ProtoUDP, DstPorts: Port(53)},
		Templates: []Template{{Proto: ProtoESP, Mode: ModeTunnel, Src: tunPeer, Dst: tunUs}}}); err != nil {
		t.Fatal(err)
	}
	f := Flow{Src: netip.MustParseAddr("10.1.0.5"), Dst: netip.MustParseAddr("10.2.0.7"), Proto: ProtoUDP, Opaque: true}
	if e.CheckForward(&f, nil) {
		t.Fatalf("opaque fragment a port-specific fwd policy may cover passed in clear")
	}
	if got := e.Stats.InTmplMismatch.Load(); got != 1 {
		t.Fatalf("XfrmInTmplMismatch = %d, want 1", got)
	}
	f.Dst = netip.MustParseAddr("10.3.0.7")
	if !e.CheckForward(&f, nil) {
		t.Fatalf("opaque fragment outside every fwd policy rejected")
	}
}

// TestOutMTU: the largest inner packet an ESP tunnel carries in one wire
// packet, against Linux's xfrm_state_mtu:
// ((mtu - header_len - authsize) & ~(blksize-1)) - 2 in tunnel mode, with
// header_len = outer header + ESP header + IV (RFC 4303 §2; RFC 4106 for
// GCM: IV 8, ICV 16, block 4; RFC 3602 and 2404 for AES-CBC with
// HMAC-SHA-1-96: IV 16, block 16, ICV 12).
func TestOutMTU(t *testing.T) {
	o4s, o4d := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	o6s, o6d := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	linux := func(mtu, hdr, icv, blk int) int { return ((mtu - hdr - icv) &^ (blk - 1)) - 2 }
	gcm := SAConfig{AEAD: Algorithm{Name: "rfc4106(gcm(aes))", Key: bytes.Repeat([]byte{1}, 20)}}
	cbc := SAConfig{Enc: Algorithm{Name: "cbc(aes)", Key: bytes.Repeat([]byte{2}, 16)},
		Auth: Algorithm{Name: "hmac(sha1)", Key: bytes.Repeat([]byte{3}, 20)}}
	for _, c := range []struct {
		name     string
		alg      SAConfig
		src, dst netip.Addr
		mtu      int
		want     int
	}{
		{"gcm v4 1400", gcm, o4s, o4d, 1400, linux(1400, 20+8+8, 16, 4)},
		{"gcm v4 1300", gcm, o4s, o4d, 1300, linux(1300, 20+8+8, 16, 4)},
		{"gcm v6 1500", gcm, o6s, o6d, 1500, linux(1500, 40+8+8, 16, 4)},
		{"cbc v4 1400", cbc, o4s, o4d, 1400, linux(1400, 20+8+16, 12, 16)},
		{"cbc v4 1393", cbc, o4s, o4d, 1393, linux(1393, 20+8+16, 12, 16)},
		{"cbc v6 1280", cbc, o6s, o6d, 1280, linux(1280, 40+8+16, 12, 16)},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := NewEngine()
			defer e.Close()
			sa := c.alg
			sa.Proto, sa.SPI, sa.Src, sa.Dst, sa.Mode = ProtoESP, 0x7700, c.src, c.dst, ModeTunnel
			if _, err := e.AddSA(sa); err != nil {
				t.Fatal(err)
			}
			if _, err := e.AddPolicy(&Policy{Dir: DirOut, Action: ActionProtect,
				Sel:       Selector{Src: pfx("10.1.0.0/16"), Dst: pfx("10.2.0.0/16")},
				Templates: []Template{{Proto: ProtoESP, Mode: ModeTunnel, Src: c.src, Dst: c.dst}}}); err != nil {
				t.Fatal(err)
			}
			var asked [2]netip.Addr
			pathMTU := func(s, d netip.Addr) int { asked = [2]netip.Addr{s, d}; return c.mtu }
			if got := e.OutMTU(inner4("10.1.0.5", "10.2.0.7", 0), pathMTU); got != c.want {
				t.Fatalf("OutMTU = %d, want %d", got, c.want)
			}
			if asked != [2]netip.Addr{c.src, c.dst} {
				t.Fatalf("path MTU asked for %v, want the tunnel's %v -> %v", asked, c.src, c.dst)
			}
			// Not protected: the path MTU of the packet's own addresses.
			if got := e.OutMTU(inner4("10.7.0.5", "10.2.0.7", 0), pathMTU); got != c.mtu || asked[0] != netip.MustParseAddr("10.7.0.5") {
				t.Fatalf("unprotected: OutMTU = %d for %v, want %d for the packet's addresses", got, asked, c.mtu)
			}
		})
	}
}
