package stack_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// rfc1071 is the Internet checksum of b (RFC 1071 §4.1), written here
// from the RFC so that the test shares no code with the wrapper's.
func rfc1071(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// tcpFrameOK checks a cleartext TCP frame as a receiver would: IPv4
// header checksum and total length, and the TCP checksum over the
// pseudo-header (RFC 793 §3.1, RFC 8200 §8.1). It returns the TCP
// payload length.
func tcpFrameOK(frame []byte) (payload int, err error) {
	ip := frame[14:]
	var pseudo uint32
	var l4 []byte
	switch ip[0] >> 4 {
	case 4:
		hl := int(ip[0]&15) * 4
		tot := int(binary.BigEndian.Uint16(ip[2:]))
		if tot > len(ip) || hl < 20 || tot < hl {
			return 0, fmt.Errorf("IPv4 total length %d, frame holds %d", tot, len(ip))
		}
		if fold(rfc1071(0, ip[:hl])) != 0xffff {
			return 0, fmt.Errorf("bad IPv4 header checksum")
		}
		l4 = ip[hl:tot]
		pseudo = rfc1071(0, ip[12:20]) + 6 + uint32(len(l4))
	case 6:
		pl := int(binary.BigEndian.Uint16(ip[4:]))
		if 40+pl > len(ip) {
			return 0, fmt.Errorf("IPv6 payload length %d, frame holds %d", pl, len(ip)-40)
		}
		l4 = ip[40 : 40+pl]
		pseudo = rfc1071(0, ip[8:40]) + 6 + uint32(len(l4))
	}
	if fold(rfc1071(pseudo, l4)) != 0xffff {
		return 0, fmt.Errorf("bad TCP checksum")
	}
	return len(l4) - int(l4[12]>>4)*4, nil
}

// offloadCases are the set-ups of the offload tests (segmentation
// before sealing, GRO after decryption): ESP transport over both
// families, ESP tunnel, and no SA at all.
var offloadCases = []struct {
	name  string
	plain bool
	inner int
	mode  xfrm.Mode
}{
	{"esp-transport-ipv4", false, 4, xfrm.ModeTransport},
	{"esp-transport-ipv6", false, 6, xfrm.ModeTransport},
	{"esp-tunnel-ipv4", false, 4, xfrm.ModeTunnel},
	{"plain-ipv4", true, 4, xfrm.ModeTransport},
	{"plain-ipv6", true, 6, xfrm.ModeTransport},
}

// TestGSOSegments: the stack's TCP hands the wrapper packets of up to
// GSOMaxSize (SupportedGSO), which it cuts into segments before IPsec.
// With ESP, every frame on the wire is ESP and fits the link, and the
// transfer arrives intact (TCPTransfer checks the bytes); with no SA, the
// segments go out in clear, each of at most the link's MTU with correct
// IP and TCP checksums computed by an independent RFC 1071 sum, and the
// receiver's TCP takes them all. Before segmentation offload the wrapper
// got one segment per packet (OutGSOSegments stays 0).
//
// Each case runs twice: on memlink as it is, a frame.Writer, to which the
// wrapper sends every segment as a frame of its own buffer, sealed in
// place (OutFrames counts them all); and behind a wrapper that hides
// that, as on a link that takes only gVisor packets (OutFrames stays 0).
func TestGSOSegments(t *testing.T) {
	for _, c := range offloadCases {
		for _, frames := range []bool{true, false} {
			name := c.name + "/frames"
			if !frames {
				name = c.name + "/packets"
			}
			t.Run(name, func(t *testing.T) { testGSOSegments(t, c.plain, c.inner, c.mode, frames) })
		}
	}
}

// packetsOnly hides a link's frame.Writer.
type packetsOnly struct{ gstack.LinkEndpoint }

func testGSOSegments(t *testing.T, plain bool, inner int, mode xfrm.Mode, frames bool) {
	cfg := testbed.Config{Suite: testbed.Suites[0], Mode: mode, Inner: inner, Plain: plain, NDP: testbed.NDPBypass}
	if !frames {
		cfg.WrapLinkA = func(l gstack.LinkEndpoint) gstack.LinkEndpoint { return packetsOnly{l} }
	}
	p, err := testbed.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	capt := newCapture(p)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.StartServers(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 2 << 20
	if _, err := testbed.TCPTransfer(ctx, p.A, p.AddrB, n); err != nil {
		t.Fatalf("tcp A->B: %v", err)
	}
	if got := p.A.Endpoint.Stats.OutGSOSegments.Load(); got == 0 {
		t.Fatalf("OutGSOSegments = 0: the stack sent no packet larger than a segment")
	}
	st := &p.A.Endpoint.Stats
	if nf, gp := st.OutFrames.Load(), st.OutGSOPackets.Load(); frames && nf < gp || !frames && nf != 0 {
		t.Fatalf("OutFrames = %d after %d GSO packets (%d segments cut); frames: %v", nf, gp, st.OutGSOSegments.Load(), frames)
	}
	mtu := int(p.A.Endpoint.WireMTU())
	payload, tcpFrames := 0, 0
	for _, f := range capt.of("A") {
		if len(f)-14 > mtu {
			t.Fatalf("frame of %d bytes on a link of MTU %d", len(f)-14, mtu)
		}
		fi, ok := parseFrame(f)
		if !ok || fi.proto != 6 {
			continue
		}
		if !plain {
			t.Fatalf("TCP in clear on a protected pair: %v -> %v", fi.src, fi.dst)
		}
		tcpFrames++
		np, err := tcpFrameOK(f)
		if err != nil {
			t.Fatalf("segment %d: %v", tcpFrames, err)
		}
		payload += np
	}
	if plain && payload < n {
		t.Fatalf("%d TCP payload bytes on the wire, want at least %d", payload, n)
	}
	if leaks, seen := p.Leaks(); len(leaks) > 0 {
		t.Fatalf("cleartext leaks (%d frames inspected):\n%v", seen, leaks)
	}
	for _, st := range p.A.Engine.Stats.Snapshot() {
		if st.Value != 0 {
			t.Errorf("A: %s = %d, want 0", st.Name, st.Value)
		}
	}
}
