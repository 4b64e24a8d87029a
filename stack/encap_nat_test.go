package stack_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/pfkey"
)

// natLink is a port-rewriting NAT (NAPT) in front of stack A, for IPv4
// ESP in UDP from A's port inPort: outgoing, the source port becomes the
// current external port; incoming, datagrams to the external port go to
// inPort and datagrams to any other port A once used are dropped, as a
// NAT drops what matches no mapping. rebind moves the mapping to a new
// external port after a number of datagrams, as a NAT does that lost its
// state. The UDP checksum of IPv4 ESP in UDP is zero (RFC 3948 §2.1), so
// rewriting a port needs no checksum update.
type natLink struct {
	nested.Endpoint
	lower  gstack.LinkEndpoint
	inPort uint16

	ext      atomic.Uint32 // the current external port
	sent     atomic.Int64  // datagrams translated outward
	rebindAt atomic.Int64  // move the mapping after this many (0: never)
	next     uint16        // the port it moves to
	stale    atomic.Int64  // datagrams dropped for an old mapping
}

func newNAT(lower gstack.LinkEndpoint, inPort uint16) *natLink {
	n := &natLink{lower: lower, inPort: inPort}
	n.ext.Store(uint32(inPort))
	n.Endpoint.Init(lower, n)
	return n
}

// udp4 returns the UDP header of pkt's IPv4 packet when it is one (in
// the packet's own buffer, so that writes change the packet).
func udp4(pkt *gstack.PacketBuffer) header.UDP {
	if pkt.NetworkProtocolNumber != header.IPv4ProtocolNumber || len(pkt.NetworkHeader().Slice()) != 0 {
		return nil // a packet of the stack's, not one the wrapper built
	}
	ip, ok := pkt.Data().PullUp(min(pkt.Data().Size(), header.IPv4MinimumSize+header.UDPMinimumSize))
	if !ok || len(ip) < header.IPv4MinimumSize+header.UDPMinimumSize || ip[0] != 0x45 || ip[9] != 17 ||
		binary.BigEndian.Uint16(ip[6:])&0x1fff != 0 {
		return nil
	}
	return header.UDP(ip[header.IPv4MinimumSize:])
}

func (n *natLink) WritePackets(pkts gstack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		if u := udp4(pkt); u != nil && u.SourcePort() == n.inPort {
			if c := n.sent.Add(1); c == n.rebindAt.Load() {
				n.ext.Store(uint32(n.next))
			}
			u.SetSourcePort(uint16(n.ext.Load()))
		}
	}
	return n.lower.WritePackets(pkts)
}

func (n *natLink) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gstack.PacketBuffer) {
	if proto == header.IPv4ProtocolNumber {
		pkt.NetworkProtocolNumber = proto
		if u := udp4(pkt); u != nil {
			switch dp := u.DestinationPort(); {
			case dp == uint16(n.ext.Load()):
				u.SetDestinationPort(n.inPort)
			case dp == n.inPort || dp == n.next:
				n.stale.Add(1)
				return
			}
		}
	}
	n.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// TestNATRebinding: A sits behind a NAT that rewrites its ESP-in-UDP
// source port; mid-transfer the NAT loses its mapping and picks a new
// port. B's first authenticated packet from the new port moves B's SA
// back to A there (RFC 3948 §4, port floating), so the 1 MiB transfer
// completes, B's replies reach A through the new mapping, and B raises
// EventNewMapping once, with the old and new peer.
func TestNATRebinding(t *testing.T) {
	for _, m := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
		t.Run(m.String(), func(t *testing.T) {
			var nat *natLink
			p, err := testbed.New(testbed.Config{Suite: testbed.Suites[0], Mode: m, Inner: 4,
				Encap: xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 4500, DPort: 4500},
				WrapLinkA: func(l gstack.LinkEndpoint) gstack.LinkEndpoint {
					nat = newNAT(l, 4500)
					return nat
				}})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			var mu sync.Mutex
			var events []xfrm.Event
			cancelSub := p.B.Engine.Subscribe(func(ev xfrm.Event) {
				if ev.Type == xfrm.EventNewMapping {
					mu.Lock()
					events = append(events, ev)
					mu.Unlock()
				}
			})
			defer cancelSub()
			// A key manager registered for ESP on B's PF_KEY server
			// hears of the move as SADB_X_NAT_T_NEW_MAPPING.
			km := pfkey.NewServer(p.B.Engine)
			defer km.Close()
			var kmMsgs []*pfkey.Msg
			sock := km.Open(func(b []byte) {
				if m, err := pfkey.Decode(b); err == nil {
					mu.Lock()
					kmMsgs = append(kmMsgs, m)
					mu.Unlock()
				}
			})
			defer sock.Close()
			sock.Handle((&pfkey.Msg{Type: pfkey.MsgRegister, SAType: pfkey.SATypeESP, PID: 77}).MustEncode())
			var toNew atomic.Int64
			p.SetTap(func(from string, f []byte) {
				if from == "B" && len(f) >= 14+28 && f[14+9] == 17 && binary.BigEndian.Uint16(f[14+22:]) == 40002 {
					toNew.Add(1)
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := p.StartServers(ctx); err != nil {
				t.Fatal(err)
			}
			nat.next = 40002
			nat.rebindAt.Store(nat.sent.Load() + 200)
			if _, err := testbed.TCPTransfer(ctx, p.A, p.AddrB, 1<<20); err != nil {
				t.Fatalf("transfer across the rebinding: %v (stale drops %d)", err, nat.stale.Load())
			}
			if nat.ext.Load() != 40002 {
				t.Fatalf("the NAT never rebound (%d datagrams)", nat.sent.Load())
			}
			mu.Lock()
			defer mu.Unlock()
			if len(events) != 1 {
				t.Fatalf("%d new-mapping events, want 1: %v", len(events), events)
			}
			ev := events[0]
			if ev.SA.SPI() != testbed.SPIAtoB || ev.OldPeer != (xfrm.EncapPeer{Addr: testbed.A4, Port: 4500}) ||
				ev.NewPeer != (xfrm.EncapPeer{Addr: testbed.A4, Port: 40002}) {
				t.Errorf("event on %v: %v -> %v", ev.SA, ev.OldPeer, ev.NewPeer)
			}
			newMaps := 0
			for _, m := range kmMsgs {
				if m.Type == pfkey.MsgXNATTNewMap {
					newMaps++
					// af_key's pfkey_send_new_mapping: the new address
					// and port go in ADDRESS_DST and NAT_T_DPORT.
					if m.NATTDport == nil || m.NATTDport.Port != 40002 {
						t.Errorf("NEW_MAPPING with new port %+v, want 40002", m.NATTDport)
					}
				}
			}
			if newMaps != 1 {
				t.Errorf("the key manager got %d SADB_X_NAT_T_NEW_MAPPING, want 1", newMaps)
			}
			back := p.B.Engine.SAD.Lookup(testbed.A4, xfrm.ProtoESP, testbed.SPIBtoA)
			if peer, _ := back.OutPeer(); peer != (xfrm.EncapPeer{Addr: testbed.A4, Port: 40002}) {
				t.Errorf("B's SA to A sends to %v", peer)
			}
			if toNew.Load() == 0 {
				t.Error("B sent nothing to the new port")
			}
			if leaks, n := p.Leaks(); len(leaks) > 0 {
				t.Errorf("leaks (%d frames): %v", n, leaks)
			}
			t.Logf("datagrams through the NAT %d, dropped for the old mapping %d", nat.sent.Load(), nat.stale.Load())
		})
	}
}

// TestNATKeepalive: an SA with a keepalive interval sends the byte 0xFF
// in UDP from its port to the peer's every interval (RFC 3948 §2.3), in
// clear although a policy protects all traffic between the hosts; the
// peer drops and counts them (InNATKeepalive) and no XFRM counter moves.
func TestNATKeepalive(t *testing.T) {
	for _, fam := range []int{4, 6} {
		p, err := testbed.New(testbed.Config{Suite: testbed.Suites[0], Mode: xfrm.ModeTransport, Inner: fam,
			Encap: xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 4500, DPort: 4501, Keepalive: 250 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		var kas atomic.Uint64
		p.SetTap(func(from string, f []byte) {
			ip := f[14:]
			off, proto := 20, ip[9]
			if ip[0]>>4 == 6 {
				off, proto = 40, ip[6]
			}
			if from == "A" && proto == 17 && len(ip) == off+9 && ip[off+8] == 0xff &&
				binary.BigEndian.Uint16(ip[off:]) == 4500 && binary.BigEndian.Uint16(ip[off+2:]) == 4501 {
				kas.Add(1)
			}
		})
		deadline := time.Now().Add(10 * time.Second)
		for p.B.Endpoint.Stats.InNATKeepalive.Load() < 3 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		p.Close()
		got := p.B.Endpoint.Stats.InNATKeepalive.Load()
		if got < 3 || kas.Load() < got {
			t.Errorf("ipv%d: B counted %d keepalives, the wire carried %d; A sent %d (errors %d)", fam, got, kas.Load(),
				p.A.Endpoint.Stats.OutNATKeepalive.Load(), p.A.Endpoint.Stats.OutNATKeepaliveErrors.Load())
		}
		for _, e := range []*xfrm.Engine{p.A.Engine, p.B.Engine} {
			for _, st := range e.Stats.Snapshot() {
				if st.Value != 0 {
					t.Errorf("ipv%d: %s = %d", fam, st.Name, st.Value)
				}
			}
		}
		if leaks, n := p.Leaks(); len(leaks) > 0 {
			t.Errorf("ipv%d: leaks (%d frames): %v", fam, n, leaks)
		}
	}
}

// TestPMTUFromICMPEncap: a Packet Too Big (Fragmentation Needed) quoting
// one of A's ESP-in-UDP packets passes the inbound check of ICMP errors
// (it is about the SA's outer path, as for plain ESP) and lowers the path
// MTU; one quoting an SPI A does not send on, or the right SPI from
// another UDP port, changes nothing.
func TestPMTUFromICMPEncap(t *testing.T) {
	for _, fam := range []int{4, 6} {
		t.Run(fmt.Sprintf("ipv%d", fam), func(t *testing.T) {
			p, err := testbed.New(testbed.Config{Suite: testbed.Suites[0], Mode: xfrm.ModeTransport, Inner: fam,
				Encap: xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 4500, DPort: 4501}})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			router := netip.MustParseAddr("192.0.2.254")
			hl := 20
			if fam == 6 {
				router, hl = netip.MustParseAddr("2001:db8::fe"), 40
			}
			var mu sync.Mutex
			var pkt []byte
			p.SetTap(func(from string, f []byte) {
				ip := f[14:]
				if from == "A" && len(ip) > hl+16 && binary.BigEndian.Uint16(ip[hl:]) == 4500 &&
					binary.BigEndian.Uint32(ip[hl+8:]) == testbed.SPIAtoB {
					mu.Lock()
					pkt = append([]byte(nil), ip...)
					mu.Unlock()
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := p.StartServers(ctx); err != nil {
				t.Fatal(err)
			}
			if err := testbed.UDPEcho(ctx, p.A, p.AddrB, 100); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			q := pkt
			mu.Unlock()
			if q == nil {
				t.Fatal("no ESP-in-UDP packet from A captured")
			}
			for _, bad := range []func([]byte){
				func(b []byte) { binary.BigEndian.PutUint32(b[hl+8:], 0xdead) },
				func(b []byte) { binary.BigEndian.PutUint16(b[hl:], 4999) },
			} {
				forged := append([]byte(nil), q...)
				bad(forged)
				deliverTo(p.A, ptbFor(router, forged, 1300))
				if got := p.A.Endpoint.PathMTU(p.AddrA, p.AddrB); got != 0 {
					t.Fatalf("a forged quote set the path MTU to %d", got)
				}
			}
			deliverTo(p.A, ptbFor(router, q, 1300))
			if got := p.A.Endpoint.PathMTU(p.AddrA, p.AddrB); got != 1300 {
				t.Fatalf("path MTU %d after a Packet Too Big of 1300 quoting ESP in UDP; stats %v", got, p.A.Engine.Stats.Snapshot())
			}
		})
	}
}
