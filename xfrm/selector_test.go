package xfrm

import (
	"errors"
	"net/netip"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func TestSelectorMatch(t *testing.T) {
	tcp := func(src, dst string, sp, dp uint16) Flow {
		return Flow{Src: addr(src), Dst: addr(dst), Proto: ProtoTCP, SrcPort: sp, DstPort: dp}
	}
	icmp6 := func(src, dst string, typ, code uint16) Flow {
		return Flow{Src: addr(src), Dst: addr(dst), Proto: ProtoICMPv6, SrcPort: typ, DstPort: code}
	}
	opaque := func(f Flow) Flow { f.Opaque = true; f.SrcPort, f.DstPort = 0, 0; return f }
	ndp := Selector{Proto: ProtoICMPv6, SrcPorts: PortRange{Lo: 133, Hi: 137}}

	tests := []struct {
		name string
		sel  Selector
		flow Flow
		want bool
	}{
		{"zero selector matches v4", Selector{}, tcp("10.0.0.1", "10.0.0.2", 1, 2), true},
		{"zero selector matches v6", Selector{}, tcp("2001:db8::1", "2001:db8::2", 1, 2), true},
		{"zero selector matches opaque", Selector{}, opaque(tcp("10.0.0.1", "10.0.0.2", 1, 2)), true},
		{"v4 prefix in", Selector{Src: pfx("10.0.0.0/8")}, tcp("10.9.9.9", "1.1.1.1", 1, 2), true},
		{"v4 prefix out", Selector{Src: pfx("10.0.0.0/8")}, tcp("11.0.0.1", "1.1.1.1", 1, 2), false},
		{"v4 dst exact", Selector{Dst: pfx("192.0.2.1/32")}, tcp("10.0.0.1", "192.0.2.1", 1, 2), true},
		{"v4 dst exact other", Selector{Dst: pfx("192.0.2.1/32")}, tcp("10.0.0.1", "192.0.2.2", 1, 2), false},
		{"unmasked prefix", Selector{Src: pfx("10.1.2.3/8")}, tcp("10.200.0.1", "1.1.1.1", 1, 2), true},
		{"v4 /0 does not match v6", Selector{Src: pfx("0.0.0.0/0")}, tcp("2001:db8::1", "2001:db8::2", 1, 2), false},
		{"v6 /0 does not match v4", Selector{Dst: pfx("::/0")}, tcp("10.0.0.1", "10.0.0.2", 1, 2), false},
		{"v4 prefix vs 4in6 flow", Selector{Src: pfx("10.0.0.0/8")}, tcp("::ffff:10.0.0.1", "::ffff:10.0.0.2", 1, 2), false},
		{"4in6 prefix vs 4in6 flow", Selector{Src: pfx("::ffff:10.0.0.0/104")}, tcp("::ffff:10.0.0.1", "::1", 1, 2), true},
		{"4in6 prefix vs v4 flow", Selector{Src: pfx("::ffff:10.0.0.0/104")}, tcp("10.0.0.1", "10.0.0.2", 1, 2), false},
		{"zoned flow", Selector{Src: pfx("fe80::/10")}, tcp("fe80::1%eth0", "fe80::2%eth0", 1, 2), true},
		{"zero flow address vs prefix", Selector{Src: pfx("0.0.0.0/0")}, Flow{Proto: ProtoTCP}, false},
		{"proto match", Selector{Proto: ProtoTCP}, tcp("10.0.0.1", "10.0.0.2", 1, 2), true},
		{"proto mismatch", Selector{Proto: ProtoUDP}, tcp("10.0.0.1", "10.0.0.2", 1, 2), false},
		{"dport exact", Selector{Proto: ProtoTCP, DstPorts: PortRange{Lo: 443, Hi: 443}}, tcp("10.0.0.1", "10.0.0.2", 5000, 443), true},
		{"dport miss", Selector{Proto: ProtoTCP, DstPorts: PortRange{Lo: 443, Hi: 443}}, tcp("10.0.0.1", "10.0.0.2", 5000, 80), false},
		{"sport range lo", Selector{SrcPorts: PortRange{Lo: 1024, Hi: 2048}}, tcp("10.0.0.1", "10.0.0.2", 1024, 1), true},
		{"sport range hi", Selector{SrcPorts: PortRange{Lo: 1024, Hi: 2048}}, tcp("10.0.0.1", "10.0.0.2", 2048, 1), true},
		{"sport range out", Selector{SrcPorts: PortRange{Lo: 1024, Hi: 2048}}, tcp("10.0.0.1", "10.0.0.2", 2049, 1), false},
		{"explicit ANY range", Selector{Proto: ProtoTCP, SrcPorts: AnyPorts}, tcp("10.0.0.1", "10.0.0.2", 7, 1), true},
		{"ANY ports match opaque", Selector{Proto: ProtoTCP, SrcPorts: AnyPorts}, opaque(tcp("10.0.0.1", "10.0.0.2", 0, 0)), true},
		{"port range never matches opaque", Selector{Proto: ProtoTCP, DstPorts: PortRange{Lo: 0, Hi: 1000}}, opaque(tcp("10.0.0.1", "10.0.0.2", 0, 0)), false},
		{"opaque with proto only", Selector{Proto: ProtoTCP}, opaque(tcp("10.0.0.1", "10.0.0.2", 0, 0)), true},
		{"ndp bypass NS", ndp, icmp6("fe80::1", "ff02::1:ff00:2", 135, 0), true},
		{"ndp bypass RS", ndp, icmp6("fe80::1", "ff02::2", 133, 0), true},
		{"ndp bypass redirect", ndp, icmp6("fe80::1", "fe80::2", 137, 0), true},
		{"ndp bypass not echo", ndp, icmp6("2001:db8::1", "2001:db8::2", 128, 0), false},
		{"ndp bypass not MLD", ndp, icmp6("fe80::1", "ff02::16", 143, 0), false},
		{"ndp bypass not tcp", ndp, tcp("fe80::1", "fe80::2", 135, 0), false},
		{"icmp code", Selector{Proto: ProtoICMP, SrcPorts: PortRange{Lo: 3, Hi: 3}, DstPorts: PortRange{Lo: 4, Hi: 4}},
			Flow{Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: ProtoICMP, SrcPort: 3, DstPort: 4}, true},
		{"icmp code miss", Selector{Proto: ProtoICMP, SrcPorts: PortRange{Lo: 3, Hi: 3}, DstPorts: PortRange{Lo: 4, Hi: 4}},
			Flow{Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: ProtoICMP, SrcPort: 3, DstPort: 1}, false},
		{"any src, v6 dst, v4 src flow", Selector{Dst: pfx("2001:db8::/32")},
			Flow{Src: addr("10.0.0.1"), Dst: addr("2001:db8::1")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.sel.Match(&tt.flow); got != tt.want {
				t.Errorf("%v Match(%v) = %v, want %v", tt.sel, tt.flow, got, tt.want)
			}
			// The canonical form used by the SPD must agree.
			c := tt.sel.canonical()
			if got := c.Match(&tt.flow); got != tt.want {
				t.Errorf("canonical %v Match(%v) = %v, want %v", c, tt.flow, got, tt.want)
			}
		})
	}
}

func TestSelectorValidateFamily(t *testing.T) {
	tests := []struct {
		sel    Selector
		ok     bool
		family int
	}{
		{Selector{}, true, 0},
		{Selector{Src: pfx("10.0.0.0/8")}, true, 4},
		{Selector{Dst: pfx("2001:db8::/32")}, true, 6},
		{Selector{Src: pfx("10.0.0.0/8"), Dst: pfx("10.1.0.0/16")}, true, 4},
		{Selector{Src: pfx("10.0.0.0/8"), Dst: pfx("2001:db8::/32")}, false, 4},
		{Selector{Src: pfx("10.0.0.0/8"), Dst: pfx("::ffff:10.0.0.0/104")}, false, 4},
		{Selector{SrcPorts: PortRange{Lo: 10, Hi: 9}}, false, 0},
		{Selector{DstPorts: PortRange{Lo: 65535, Hi: 1}}, false, 0},
		{Selector{DstPorts: PortRange{Lo: 5, Hi: 5}}, true, 0},
		{Selector{DstPorts: AnyPorts}, true, 0},
	}
	for _, tt := range tests {
		err := tt.sel.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%v Validate() = %v, want ok=%v", tt.sel, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%v Validate() = %v, not ErrInvalid", tt.sel, err)
		}
		if f := tt.sel.Family(); f != tt.family {
			t.Errorf("%v Family() = %d, want %d", tt.sel, f, tt.family)
		}
	}
}

func TestSelectorString(t *testing.T) {
	tests := []struct {
		sel  Selector
		want string
	}{
		{Selector{}, "any[any] any[any] any"},
		{Selector{Src: pfx("10.0.0.0/24"), Dst: pfx("10.0.1.5/32"), Proto: ProtoTCP, DstPorts: PortRange{Lo: 443, Hi: 443}},
			"10.0.0.0/24[any] 10.0.1.5/32[443] tcp"},
		{Selector{Src: pfx("2001:db8::/64"), Dst: pfx("::/0"), Proto: ProtoUDP, SrcPorts: PortRange{Lo: 1024, Hi: 65535}},
			"2001:db8::/64[1024-65535] ::/0[any] udp"},
		{Selector{Proto: ProtoICMPv6, SrcPorts: PortRange{Lo: 133, Hi: 137}}, "any any icmp6 133-137"},
		{Selector{Proto: ProtoICMPv6, SrcPorts: PortRange{Lo: 135, Hi: 135}, DstPorts: PortRange{Lo: 0, Hi: 0}}, "any any icmp6 135"},
		{Selector{Proto: ProtoICMP, SrcPorts: PortRange{Lo: 3, Hi: 3}, DstPorts: PortRange{Lo: 4, Hi: 4}}, "any any icmp 3,4"},
		{Selector{Proto: ProtoICMPv6}, "any any icmp6"},
		{Selector{Proto: 47}, "any[any] any[any] 47"},
	}
	for _, tt := range tests {
		if got := tt.sel.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

// TestICMPTypeZeroIsExact is issue 10 finding 8: a selector for ICMP type
// 0 (IPv4 echo reply, RFC 792) selected every ICMP type, because the
// {0, 0} range was ANY. Port(0) is exact; the zero range stays ANY.
func TestICMPTypeZeroIsExact(t *testing.T) {
	icmp := func(typ, code uint16) *Flow {
		return &Flow{Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: ProtoICMP, SrcPort: typ, DstPort: code}
	}
	reply := Selector{Proto: ProtoICMP, SrcPorts: Port(0)}
	unreachNet := Selector{Proto: ProtoICMP, SrcPorts: Port(3), DstPorts: Port(0)} // type 3 code 0
	tests := []struct {
		name string
		sel  Selector
		flow *Flow
		want bool
	}{
		{"echo reply matches type 0", reply, icmp(0, 0), true},
		{"echo request is not type 0", reply, icmp(8, 0), false},
		{"unreachable is not type 0", reply, icmp(3, 1), false},
		{"code 0 matches", unreachNet, icmp(3, 0), true},
		{"code 1 is not code 0", unreachNet, icmp(3, 1), false},
		{"exact 0 never matches opaque", reply, &Flow{Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: ProtoICMP, Opaque: true}, false},
		{"zero range is still any", Selector{Proto: ProtoICMP}, icmp(8, 0), true},
		{"specified 0-65535 is every port but not opaque", Selector{Proto: ProtoUDP, DstPorts: PortRange{Lo: 0, Hi: 0xffff, Specified: true}},
			&Flow{Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: ProtoUDP, Opaque: true}, false},
	}
	for _, tt := range tests {
		if got := tt.sel.Match(tt.flow); got != tt.want {
			t.Errorf("%s: %v Match(%v) = %v, want %v", tt.name, tt.sel, tt.flow, got, tt.want)
		}
	}
	// Through the SPD: a discard for echo replies leaves echo requests
	// to the bypass behind it.
	s := NewSPD()
	mustAdd(t, s, &Policy{Dir: DirIn, Sel: Selector{}, Priority: 10, Action: ActionBypass})
	drop := mustAdd(t, s, &Policy{Dir: DirIn, Sel: reply, Priority: 1, Action: ActionDiscard})
	if got := s.Lookup(DirIn, icmp(8, 0)); got == drop {
		t.Errorf("echo request hit the echo-reply policy")
	}
	if got := s.Lookup(DirIn, icmp(0, 0)); got != drop {
		t.Errorf("echo reply Lookup = %v, want the type-0 policy", polStr(got))
	}
	// Exact 0 and ANY are different selectors; spellings of one are one.
	if _, err := s.Add(&Policy{Dir: DirIn, Sel: Selector{Proto: ProtoICMP}, Priority: 1}); err != nil {
		t.Errorf("ANY-type selector clashed with type 0: %v", err)
	}
	if _, err := s.Add(&Policy{Dir: DirIn, Sel: Selector{Proto: ProtoICMP, SrcPorts: PortRange{Specified: true}}, Priority: 2}); !errors.Is(err, ErrExist) {
		t.Errorf("a second spelling of type 0: %v, want ErrExist", err)
	}
	anyType := Selector{Proto: ProtoICMP}
	if reply.String() != "any any icmp 0" || anyType.String() != "any any icmp" {
		t.Errorf("String: %q, %q", reply.String(), anyType.String())
	}
}
