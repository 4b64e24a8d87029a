package stack_test

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// encapFrames counts, from the tap, the frames a side sent as ESP inside
// UDP between the given ports and those sent as plain ESP.
type encapFrames struct {
	udp, plain atomic.Int64
}

func (c *encapFrames) tap(sport, dport uint16) func(string, []byte) {
	return func(from string, f []byte) {
		if len(f) < 14+1 {
			return
		}
		ip := f[14:]
		var proto byte
		var l4 []byte
		switch ip[0] >> 4 {
		case 4:
			if len(ip) < 20 {
				return
			}
			proto, l4 = ip[9], ip[int(ip[0]&0xf)*4:]
		case 6:
			if len(ip) < 40 {
				return
			}
			proto, l4 = ip[6], ip[40:]
		default:
			return
		}
		switch {
		case proto == 50:
			c.plain.Add(1)
		case proto == 17 && len(l4) >= 16:
			sp, dp := binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
			if (sp == sport && dp == dport) || (sp == dport && dp == sport) {
				c.udp.Add(1)
			}
		}
	}
}

// TestESPInUDP: the traffic matrix of the data-plane issue (ping, UDP 100
// and 8000 bytes, TCP, both ways) over UDP-encapsulated ESP (RFC 3948) in
// transport and tunnel mode, IPv4 and IPv6, with the leak detector
// watching and every XFRM counter still zero; no plain ESP on the wire.
// The ports differ (4500 at A, 4501 at B) so that a swap shows.
func TestESPInUDP(t *testing.T) {
	tcpBytes := 1 << 20
	for _, m := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
		for _, fam := range []int{4, 6} {
			t.Run(fmt.Sprintf("%s/ipv%d", m, fam), func(t *testing.T) {
				p, err := testbed.New(testbed.Config{Suite: testbed.Suites[0], Mode: m, Inner: fam,
					Encap: xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 4500, DPort: 4501}})
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				var c encapFrames
				p.SetTap(c.tap(4500, 4501))
				runTraffic(t, p, tcpBytes)
				if c.udp.Load() < 100 {
					t.Errorf("%d ESP-in-UDP frames, want the bulk of the traffic", c.udp.Load())
				}
				if n := c.plain.Load(); n != 0 && fam == 4 {
					t.Errorf("%d plain ESP frames", n)
				}
			})
		}
	}
}
