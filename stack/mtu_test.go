package stack_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// wireWatch records the largest frame and every IP fragment seen on the
// link, with the protocol its first header carries.
type wireWatch struct {
	mu        sync.Mutex
	maxFrame  int
	fragments int
	clearFrag int // fragments whose payload is not IPsec
}

func (w *wireWatch) tap(_ string, frame []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.maxFrame = max(w.maxFrame, len(frame))
	if len(frame) < 14+40 {
		return
	}
	ip := frame[14:]
	switch binary.BigEndian.Uint16(frame[12:]) {
	case 0x0800:
		if binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
			w.fragments++
			if ip[9] != 50 {
				w.clearFrag++
			}
		}
	case 0x86dd:
		if ip[6] == 44 {
			w.fragments++
			if ip[40] != 50 {
				w.clearFrag++
			}
		}
	}
}

// TestMTU checks the MTU rules of the data-plane issue: TCP segments plus
// ESP fit the wire (no fragments), and 8000-byte UDP datagrams are protected
// first and fragmented after (every fragment carries ESP), in both modes and
// both families, on 1500 and 1280-byte links.
func TestMTU(t *testing.T) {
	for _, mtu := range []uint32{1500, 1280} {
		for _, mode := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
			for _, fam := range []int{6, 4} {
				t.Run(fmt.Sprintf("mtu%d/%s/ipv%d", mtu, mode, fam), func(t *testing.T) {
					suite, _ := testbed.SuiteByName("aes-cbc-256+hmac-sha512") // the largest overhead
					p, err := testbed.New(testbed.Config{Suite: suite, Mode: mode, Inner: fam, MTU: mtu})
					if err != nil {
						t.Fatal(err)
					}
					defer p.Close()
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					if err := p.StartServers(ctx); err != nil {
						t.Fatal(err)
					}
					if err := testbed.UDPEcho(ctx, p.A, p.AddrB, 100); err != nil {
						t.Fatal(err)
					}
					w := &wireWatch{}
					p.SetTap(w.tap)
					if _, err := testbed.TCPTransfer(ctx, p.A, p.AddrB, 1<<20); err != nil {
						t.Fatal(err)
					}
					w.mu.Lock()
					if w.fragments != 0 {
						t.Errorf("TCP over ESP produced %d IP fragments; segments should fit the %d-byte MTU", w.fragments, mtu)
					}
					if w.maxFrame > int(mtu)+14 {
						t.Errorf("largest frame %d bytes exceeds MTU %d + 14", w.maxFrame, mtu)
					}
					if w.maxFrame < int(mtu)+14-200 {
						t.Errorf("largest TCP frame only %d bytes on a %d-byte MTU link: MSS too small", w.maxFrame, mtu)
					}
					w.fragments, w.maxFrame = 0, 0
					w.mu.Unlock()
					if err := testbed.UDPEcho(ctx, p.A, p.AddrB, 8000); err != nil {
						t.Fatal(err)
					}
					w.mu.Lock()
					defer w.mu.Unlock()
					if w.fragments == 0 {
						t.Errorf("8000-byte datagram crossed without fragments")
					}
					if w.clearFrag != 0 {
						t.Errorf("%d fragments carry no ESP: the datagram was fragmented before IPsec", w.clearFrag)
					}
					if w.maxFrame > int(mtu)+14 {
						t.Errorf("largest fragment frame %d bytes exceeds MTU %d + 14", w.maxFrame, mtu)
					}
				})
			}
		}
	}
}
