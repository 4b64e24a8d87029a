package stack_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestRekeyUnderTraffic replaces the SAs of a flow again and again while a
// TCP transfer runs — sometimes new SAs before the old ones go (a clean
// rekey), sometimes the old ones first (a gap with no SA at all) — and
// checks that no packet of the protected flow ever crossed in clear and
// that the transfer completes intact.
func TestRekeyUnderTraffic(t *testing.T) {
	for _, mode := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
		t.Run(mode.String(), func(t *testing.T) {
			p, err := testbed.New(testbed.Config{Suite: testbed.Suites[0], Mode: mode, Inner: 4})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := p.StartServers(ctx); err != nil {
				t.Fatal(err)
			}
			const wantRounds = 40
			var stop atomic.Bool
			done := make(chan int, 1)
			go func() {
				rounds := 0
				spi := uint32(0x9000)
				cur := [2]uint32{testbed.SPIAtoB, testbed.SPIBtoA}
				for !stop.Load() && rounds < wantRounds {
					rounds++
					spi += 2
					next := [2]uint32{spi, spi + 1}
					gap := rounds%3 == 0 // delete first: a moment with no SA
					if gap {
						rekeyDelete(t, p, cur)
					}
					rekeyAdd(t, p, cur, next)
					if !gap {
						rekeyDelete(t, p, cur)
					}
					cur = next
					time.Sleep(2 * time.Millisecond)
				}
				done <- rounds
			}()
			// Transfers run until the rekeying is over, and once after.
			var rounds int
			for finished := false; !finished; {
				select {
				case rounds = <-done:
					finished = true
				default:
				}
				t0 := time.Now()
				if _, err := testbed.TCPTransfer(ctx, p.A, p.AddrB, 1<<20); err != nil {
					stop.Store(true)
					t.Fatalf("transfer during rekeying: %v", err)
				}
				t.Logf("transfer took %v", time.Since(t0))
			}
			if rounds < wantRounds {
				t.Fatalf("only %d rekeys", rounds)
			}
			leaks, frames := p.Leaks()
			if len(leaks) > 0 {
				t.Fatalf("cleartext during rekeying (%d frames): %v", frames, leaks)
			}
			t.Logf("%d rekeys, %d frames, no cleartext; A XfrmOutNoStates %d", rounds, frames, stat(p.A.Engine, "XfrmOutNoStates"))
		})
	}
}

func stat(e *xfrm.Engine, name string) uint64 { v, _ := e.Stats.Get(name); return v }

// rekeyAdd installs, on both stacks, copies of the SAs cur (A→B, B→A)
// under the SPIs next.
func rekeyAdd(t *testing.T, p *testbed.Pair, cur, next [2]uint32) {
	for i, spi := range cur {
		var cfg xfrm.SAConfig
		found := false
		p.A.Engine.SAD.Walk(func(sa *xfrm.SA) bool {
			if sa.SPI() == spi && sa.Usable() {
				cfg, found = sa.Config, true
				return false
			}
			return true
		})
		if !found {
			cfg = savedConfig[i]
		}
		savedConfig[i] = cfg
		cfg.SPI = next[i]
		cfg.Seq = 0
		cfg.AEAD.Key = append([]byte(nil), cfg.AEAD.Key...)
		cfg.AEAD.Key[0] ^= byte(next[i]) // new keys too
		for _, e := range []*xfrm.Engine{p.A.Engine, p.B.Engine} {
			if _, err := e.AddSA(cfg); err != nil {
				t.Errorf("add SA 0x%x: %v", next[i], err)
			}
		}
	}
}

// savedConfig remembers the last SA configs, for rounds that deleted the
// old SAs before adding the new ones.
var savedConfig [2]xfrm.SAConfig

func rekeyDelete(t *testing.T, p *testbed.Pair, cur [2]uint32) {
	for i, spi := range cur {
		for _, e := range []*xfrm.Engine{p.A.Engine, p.B.Engine} {
			var dst = testbed.B4
			if i == 1 {
				dst = testbed.A4
			}
			if sa := e.SAD.Lookup(dst, xfrm.ProtoESP, spi); sa != nil {
				savedConfig[i] = sa.Config
				savedConfig[i].AEAD.Key = append([]byte(nil), sa.Config.AEAD.Key...)
				if _, err := e.SAD.Delete(dst, xfrm.ProtoESP, spi); err != nil {
					t.Errorf("delete SA 0x%x: %v", spi, err)
				}
			}
		}
	}
}
