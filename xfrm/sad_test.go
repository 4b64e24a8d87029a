package xfrm

import (
	"fmt"
	"net/netip"
	"testing"
)

// TestSADLookupSharedSPI: Lookup finds an SA by destination, protocol
// and SPI, all three (RFC 4301 §4.1), also when SAs share an SPI: under
// another destination (an IPv4 address and the IPv6 address that maps
// it are two), or another protocol, and when more SAs share one than
// Lookup compares one by one (maxSPIShare). The oracle is a walk of
// every SA, compared field by field. Deleting and flushing SAs leaves the
// others found and the removed ones not.
func TestSADLookupSharedSPI(t *testing.T) {
	const spi = 0x1234
	d1, d2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	mapped := netip.AddrFrom16(d1.As16())
	src := netip.MustParseAddr("192.0.2.9")
	src6 := netip.MustParseAddr("2001:db8::9")
	type query struct {
		dst   netip.Addr
		proto Proto
		spi   uint32
	}
	e := NewEngine()
	t.Cleanup(e.Close)
	for _, c := range []SAConfig{
		bundleSA(t, ProtoESP, spi, src, d1, ModeTransport),
		bundleSA(t, ProtoESP, spi, src, d2, ModeTransport),
		bundleSA(t, ProtoAH, spi, src, d1, ModeTransport),
		bundleSA(t, ProtoESP, spi, src6, mapped, ModeTransport),
		bundleSA(t, ProtoESP, spi+1, src, d1, ModeTransport),
	} {
		if _, err := e.AddSA(c); err != nil {
			t.Fatal(err)
		}
	}
	// More SAs with the SPI than Lookup compares one by one.
	var crowd []netip.Addr
	for i := range maxSPIShare + 2 {
		crowd = append(crowd, netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}))
	}
	check := func(step string, queries []query) {
		t.Helper()
		for _, q := range queries {
			var want *SA
			e.SAD.Walk(func(sa *SA) bool {
				if c := &sa.Config; c.Dst == q.dst && c.Proto == q.proto && c.SPI == q.spi {
					want = sa
				}
				return true
			})
			if got := e.SAD.Lookup(q.dst, q.proto, q.spi); got != want {
				t.Errorf("%s: Lookup(%v, %v, 0x%x) = %p, want %p", step, q.dst, q.proto, q.spi, got, want)
			}
		}
	}
	var crowdQ []query
	for _, d := range append(crowd, netip.MustParseAddr("198.51.100.200")) {
		crowdQ = append(crowdQ, query{d, ProtoESP, spi + 7}, query{d, ProtoAH, spi + 7})
	}
	for i, d := range crowd {
		if _, err := e.AddSA(bundleSA(t, ProtoESP, spi+7, src, d, ModeTransport)); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("%d sharing", i+1), crowdQ)
	}
	for i, d := range crowd {
		if _, err := e.SAD.Delete(d, ProtoESP, spi+7); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("%d sharing", len(crowd)-i-1), crowdQ)
	}
	queries := []query{
		{d1, ProtoESP, spi}, {d2, ProtoESP, spi}, {d1, ProtoAH, spi}, {mapped, ProtoESP, spi},
		{d1, ProtoESP, spi + 1}, {d2, ProtoAH, spi}, {mapped, ProtoAH, spi},
		{netip.MustParseAddr("192.0.2.3"), ProtoESP, spi}, {d1, ProtoIPComp, spi}, {d1, ProtoESP, spi + 2},
	}
	check("added", queries)
	if _, err := e.SAD.Delete(d1, ProtoESP, spi); err != nil {
		t.Fatal(err)
	}
	check("one deleted", queries)
	if _, err := e.SAD.Delete(mapped, ProtoESP, spi); err != nil {
		t.Fatal(err)
	}
	check("two deleted", queries)
	if _, err := e.AddSA(bundleSA(t, ProtoESP, spi, src, d1, ModeTransport)); err != nil {
		t.Fatal(err)
	}
	check("added again", queries)
	e.SAD.Flush(ProtoAH)
	check("AH flushed", queries)
	e.SAD.Flush(0)
	check("flushed", queries)
}

// BenchmarkSADLookup is the inbound SA lookup every IPsec packet makes,
// in a SAD of a few SAs and in a large one.
func BenchmarkSADLookup(b *testing.B) {
	for _, n := range []int{4, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			e := NewEngine()
			defer e.Close()
			dst := netip.MustParseAddr("192.0.2.1")
			for i := range n {
				if _, err := e.AddSA(bundleSA(b, ProtoESP, uint32(0x1000+i), netip.MustParseAddr("192.0.2.9"), dst, ModeTransport)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if e.SAD.Lookup(dst, ProtoESP, uint32(0x1000+i%n)) == nil {
					b.Fatal("not found")
				}
			}
		})
	}
}

// BenchmarkSADFindOutbound is the outbound SA search a protected packet
// makes for its template, among a few SAs and many.
func BenchmarkSADFindOutbound(b *testing.B) {
	for _, n := range []int{4, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			e := NewEngine()
			defer e.Close()
			src := netip.MustParseAddr("192.0.2.9")
			dsts := make([]netip.Addr, n)
			for i := range n {
				dsts[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
				if _, err := e.AddSA(bundleSA(b, ProtoESP, uint32(0x1000+i), src, dsts[i], ModeTransport)); err != nil {
					b.Fatal(err)
				}
			}
			t := Template{Proto: ProtoESP, Mode: ModeTransport}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if e.SAD.FindOutbound(&t, src, dsts[i%n], nil) == nil {
					b.Fatal("not found")
				}
			}
		})
	}
}
