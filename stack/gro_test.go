package stack_test

import (
	"context"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
)

// TestGROAfterDecrypt: the link delivers frames in batches
// (DeliverNetworkPackets; memlink batches what is queued, as fdlink's
// readers batch a recvmmsg), and the wrapper coalesces the TCP segments it
// decrypts from a batch before gVisor's IP and TCP see them. The transfer
// arrives intact and in order (TCPTransfer checks every byte), nothing
// is dropped, and TCP receives fewer segments than ESP packets were
// decrypted; cleartext segments (no SA) go through GRO too. memlink has
// no receive checksum offload, so the checksums GRO leaves stale are
// recomputed (rxBatch.DeliverNetworkPacket): without that the first
// merged segment failed TCP's checksum and the transfer stalled. Before
// GRO every decrypted segment went up on its own (TCP's
// ValidSegmentsReceived was at least the ESP packets reinjected).
func TestGROAfterDecrypt(t *testing.T) {
	for _, c := range offloadCases {
		t.Run(c.name, func(t *testing.T) {
			p, err := testbed.New(testbed.Config{Suite: testbed.Suites[0], Mode: c.mode, Inner: c.inner, Plain: c.plain, NDP: testbed.NDPBypass})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := p.StartServers(ctx); err != nil {
				t.Fatal(err)
			}
			segs0 := p.B.Stats().TCP.ValidSegmentsReceived.Value()
			esp0 := p.B.Endpoint.Stats.Reinjected.Load()
			frames0 := p.LinkB.Stats().Delivered
			if _, err := testbed.TCPTransfer(ctx, p.A, p.AddrB, 8<<20); err != nil {
				t.Fatalf("tcp A->B: %v", err)
			}
			segs := p.B.Stats().TCP.ValidSegmentsReceived.Value() - segs0
			esp := p.B.Endpoint.Stats.Reinjected.Load() - esp0
			frames := p.LinkB.Stats().Delivered - frames0
			t.Logf("%d frames received, %d ESP packets decrypted, %d TCP segments received", frames, esp, segs)
			if !c.plain && esp < frames/2 {
				t.Errorf("%d ESP packets decrypted of %d frames: the transfer did not go over ESP", esp, frames)
			}
			// In clear too: the frames from the link have their link
			// header consumed, and gVisor's GRO, which checks the TCP
			// checksum at an offset into the data with an API that
			// counts from the buffer's start, failed every one of them
			// and merged none (6624 TCP segments for 6625 frames)
			// until the wrapper checked them itself (rxBatch.enqueue).
			if segs >= frames*3/4 {
				t.Errorf("TCP received %d segments for %d frames: nothing coalesced", segs, frames)
			}
			for _, st := range p.B.Engine.Stats.Snapshot() {
				if st.Value != 0 {
					t.Errorf("B: %s = %d, want 0", st.Name, st.Value)
				}
			}
			if leaks, frames := p.Leaks(); len(leaks) > 0 {
				t.Fatalf("cleartext leaks (%d frames inspected):\n%v", frames, leaks)
			}
		})
	}
}
