package stack

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/esp"
)

// Path MTU for IPsec (issue 10, finding 7). Routers past the link send
// their Packet Too Big / Fragmentation Needed to the source of the packet
// they could not forward: for protected traffic, the outer ESP/AH packet,
// whose source is us. gVisor does not know those packets (they are built
// in the wrapper), so, as Linux's esp4_err/esp6_err/ah4_err/ah6_err do, the
// wrapper reads the error, checks that it quotes a packet of an outbound
// SA it holds, and records the path MTU for that SA's outer (src, dst),
// for PMTUExpiry (Linux's ip_rt_mtu_expires, 10 minutes). A locally
// generated TCP segment that then does not fit after IPsec is answered
// with a Packet Too Big injected into the stack, quoting the segment and
// giving the MTU left for it (path MTU minus the IPsec overhead), so
// gVisor's TCP lowers its segment size. Packets that do not fit are
// fragmented after IPsec to the path MTU (see Endpoint.sendWire).

// PMTUExpiry is how long a learned path MTU is used (Linux's
// net.ipv4.route.mtu_expires default).
const PMTUExpiry = 10 * time.Minute

// Smallest path MTUs a Packet Too Big can set: Linux's ip_rt_min_pmtu
// (512 + 20 + 20) for IPv4, and the IPv6 minimum link MTU (RFC 8200 §5).
const (
	minPMTU4 = 552
	minPMTU6 = header.IPv6MinimumMTU
)

// maxPMTUEntries bounds the cache; entries exist only for outer address
// pairs of our own SAs, so this is never reached in practice.
const maxPMTUEntries = 4096

// maxPTBInFlight bounds the injected Packet Too Big messages not yet
// delivered: a burst of too-big segments needs only the first.
const maxPTBInFlight = 16

type pmtuKey struct{ src, dst netip.Addr }

type pmtuEntry struct {
	mtu     uint32
	expires time.Time
}

// pmtuCache holds learned path MTUs by outer (source, destination).
type pmtuCache struct {
	n   atomic.Int32 // entries, so the hot path skips the lock when empty
	ttl atomic.Int64 // entry lifetime in nanoseconds; 0 means PMTUExpiry
	mu  sync.RWMutex
	m   map[pmtuKey]pmtuEntry
}

func (c *pmtuCache) lifetime() time.Duration {
	if d := time.Duration(c.ttl.Load()); d > 0 {
		return d
	}
	return PMTUExpiry
}

// lower records mtu for key unless a smaller one is current, and reports
// whether the entry changed.
func (c *pmtuCache) lower(k pmtuKey, mtu uint32, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[pmtuKey]pmtuEntry)
	}
	old, ok := c.m[k]
	if ok && now.Before(old.expires) && old.mtu <= mtu {
		return false
	}
	if !ok && len(c.m) >= maxPMTUEntries {
		for key, en := range c.m {
			if !now.Before(en.expires) {
				delete(c.m, key)
			}
		}
		if len(c.m) >= maxPMTUEntries {
			return false
		}
	}
	c.m[k] = pmtuEntry{mtu: mtu, expires: now.Add(c.lifetime())}
	c.n.Store(int32(len(c.m)))
	return true
}

// get returns the path MTU for k, or 0.
func (c *pmtuCache) get(k pmtuKey) uint32 {
	if c.n.Load() == 0 {
		return 0
	}
	c.mu.RLock()
	en, ok := c.m[k]
	c.mu.RUnlock()
	if !ok {
		return 0
	}
	if !time.Now().Before(en.expires) {
		c.mu.Lock()
		if cur, ok := c.m[k]; ok && cur == en {
			delete(c.m, k)
			c.n.Store(int32(len(c.m)))
		}
		c.mu.Unlock()
		return 0
	}
	return en.mtu
}

// PathMTU returns the path MTU learned for packets from src to dst (outer
// addresses), or 0 when none is current.
func (e *Endpoint) PathMTU(src, dst netip.Addr) uint32 {
	return e.pmtu.get(pmtuKey{src, dst})
}

// SetPMTUExpiry sets how long learned path MTUs last (0: PMTUExpiry).
// Entries already learned keep their expiry.
func (e *Endpoint) SetPMTUExpiry(d time.Duration) { e.pmtu.ttl.Store(int64(d)) }

// ipAddrs returns the source and destination of an IP packet.
func ipAddrs(ip []byte) (src, dst netip.Addr, ok bool) {
	switch {
	case len(ip) >= header.IPv4MinimumSize && ip[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20])), true
	case len(ip) >= header.IPv6MinimumSize && ip[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40])), true
	}
	return netip.Addr{}, netip.Addr{}, false
}

// pathMTU is the MTU an outgoing IP packet wire must fit: the link's,
// or a smaller path MTU learned for its addresses.
func (e *Endpoint) pathMTU(wire []byte) int {
	mtu := int(e.WireMTU())
	if e.pmtu.n.Load() == 0 {
		return mtu
	}
	if src, dst, ok := ipAddrs(wire); ok {
		if p := int(e.pmtu.get(pmtuKey{src, dst})); p != 0 && p < mtu {
			return p
		}
	}
	return mtu
}

// notePMTU reads a cleartext packet that passed the inbound check: if it
// is an ICMP Fragmentation Needed or ICMPv6 Packet Too Big quoting an
// ESP or AH packet of one of our outbound SAs, it records the path MTU for
// that SA's outer addresses; quoting a packet we sent in clear, for its
// addresses. The packet itself goes on to the stack
// (which ignores it: it quotes a protocol it has no endpoint for).
func (e *Endpoint) notePMTU(b []byte, f *xfrm.Flow) {
	var mtu uint32
	switch {
	case f.Proto == xfrm.ProtoICMP && f.SrcPort == uint16(header.ICMPv4DstUnreachable) &&
		f.DstPort == uint16(header.ICMPv4FragmentationNeeded):
	case f.Proto == xfrm.ProtoICMPv6 && f.SrcPort == uint16(header.ICMPv6PacketTooBig):
	default:
		return
	}
	var g xfrm.Flow
	l4, err := xfrm.ParseFlow(b, &g)
	if err != nil || len(b) < l4+header.ICMPv4MinimumSize {
		return
	}
	icmp := b[l4:]
	v4 := f.Proto == xfrm.ProtoICMP
	if v4 {
		mtu = uint32(binary.BigEndian.Uint16(icmp[6:8]))
	} else {
		mtu = binary.BigEndian.Uint32(icmp[4:8])
	}
	quote := icmp[8:]
	src, dst, ok := ipAddrs(quote)
	if !ok || src.Is4() != v4 {
		return
	}
	var proto xfrm.Proto
	var ipsec []byte
	if v4 {
		ihl := int(quote[0]&0xf) * 4
		if ihl < header.IPv4MinimumSize || len(quote) < ihl || binary.BigEndian.Uint16(quote[6:8])&0x1fff != 0 {
			return
		}
		proto, ipsec = xfrm.Proto(quote[9]), quote[ihl:]
	} else {
		proto, ipsec = xfrm.Proto(quote[6]), quote[header.IPv6MinimumSize:]
		if proto == 44 && len(ipsec) >= 8 && binary.BigEndian.Uint16(ipsec[2:4])&0xfff8 == 0 {
			// Our own fragment of an ESP packet, made after IPsec.
			proto, ipsec = xfrm.Proto(ipsec[0]), ipsec[8:]
		}
	}
	var sport uint16
	// UDP from a port an encapsulated SA of ours sends from is ESP in
	// UDP; other UDP is a datagram we sent in clear.
	encap := proto == xfrm.Proto(xfrm.ProtoUDP) && len(ipsec) >= 2 &&
		e.engine.SAD.IsEncapPort(src, binary.BigEndian.Uint16(ipsec))
	if encap {
		// ESP in UDP (RFC 3948): the quote must reach the SPI (an
		// 8-byte quote, RFC 792's least, names no SA and is ignored).
		if len(ipsec) < xfrm.UDPHeaderLen+esp.HeaderLen {
			return
		}
		sport, proto, ipsec = binary.BigEndian.Uint16(ipsec), xfrm.ProtoESP, ipsec[xfrm.UDPHeaderLen:]
	}
	if encap || proto == xfrm.ProtoESP || proto == xfrm.ProtoAH {
		spi, ok := xfrm.PacketSPI(proto, ipsec)
		if !ok {
			return
		}
		sa := e.engine.SAD.Lookup(dst, proto, spi)
		if sa == nil || sa.Config.Src != src || sa.Encapsulated() != encap || (encap && encapSPort(sa) != sport) {
			// Not a packet of an SA we send on: a forged or stray error.
			return
		}
	} else if _, to, ok := ipAddrs(b); !ok || to != src {
		// A packet in clear (bypass or no policy) that we did not
		// send: the error is addressed to its source, not to us.
		return
	}
	// A packet we sent in clear: as a host does (RFC 1191, RFC 8201),
	// datagrams to dst are then fragmented to the path MTU, here after
	// IPsec as all local traffic (sendWire); gVisor's own fragmenting
	// ignores path MTUs. TCP lowers its segment size from the same error.
	if v4 {
		if mtu < header.IPv4MinimumMTU {
			// RFC 1191 §5: an old router reports 0; Linux then
			// guesses a plateau. Take the minimum.
			mtu = minPMTU4
		}
		mtu = max(mtu, minPMTU4)
	} else {
		mtu = max(mtu, minPMTU6)
	}
	if mtu >= e.WireMTU() {
		return
	}
	if e.pmtu.lower(pmtuKey{src, dst}, mtu, time.Now()) {
		e.Stats.PMTUUpdates.Add(1)
	}
}

// injectPTB gives the stack above a Packet Too Big (IPv6) or
// Fragmentation Needed (IPv4) for the locally generated packet inner,
// from inner's destination, saying mtu bytes fit. It runs on its own
// goroutine: the writer of inner may hold locks its handling takes.
// Several too-big segments in flight each ask; TCP keeps the smallest.
func (e *Endpoint) injectPTB(inner []byte, mtu int) {
	if e.ptbInFlight.Add(1) > maxPTBInFlight {
		e.ptbInFlight.Add(-1)
		return
	}
	src, dst, ok := ipAddrs(inner)
	if !ok {
		e.ptbInFlight.Add(-1)
		return
	}
	var pkt []byte
	if src.Is4() {
		q := inner[:min(len(inner), int(inner[0]&0xf)*4+64)]
		pkt = make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+len(q))
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(pkt)),
			TTL:         64,
			Protocol:    uint8(header.ICMPv4ProtocolNumber),
			SrcAddr:     tcpAddr(dst),
			DstAddr:     tcpAddr(src),
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		ic := header.ICMPv4(pkt[header.IPv4MinimumSize:])
		ic.SetType(header.ICMPv4DstUnreachable)
		ic.SetCode(header.ICMPv4FragmentationNeeded)
		ic.SetMTU(uint16(mtu))
		copy(ic[header.ICMPv4MinimumSize:], q)
		ic.SetChecksum(^checksum.Checksum(ic, 0))
	} else {
		q := inner[:min(len(inner), header.IPv6MinimumSize+64)]
		pkt = make([]byte, header.IPv6MinimumSize+header.ICMPv6PacketTooBigMinimumSize+len(q))
		ip := header.IPv6(pkt)
		ip.Encode(&header.IPv6Fields{
			PayloadLength:     uint16(len(pkt) - header.IPv6MinimumSize),
			TransportProtocol: header.ICMPv6ProtocolNumber,
			HopLimit:          64,
			SrcAddr:           tcpAddr(dst),
			DstAddr:           tcpAddr(src),
		})
		ic := header.ICMPv6(pkt[header.IPv6MinimumSize:])
		ic.SetType(header.ICMPv6PacketTooBig)
		ic.SetMTU(uint32(mtu))
		copy(ic[header.ICMPv6PacketTooBigMinimumSize:], q)
		ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
			Header: ic, Src: tcpAddr(dst), Dst: tcpAddr(src),
		}))
	}
	e.Stats.PTBInjected.Add(1)
	go func() {
		defer e.ptbInFlight.Add(-1)
		d := e.upper()
		if d == nil {
			return
		}
		proto := header.IPv6ProtocolNumber
		if src.Is4() {
			proto = header.IPv4ProtocolNumber
		}
		p := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
		defer p.DecRef()
		d.DeliverNetworkPacket(proto, p)
	}()
}

func tcpAddr(a netip.Addr) tcpip.Address { return tcpip.AddrFromSlice(a.AsSlice()) }
