package daemon

import (
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
)

// TestChildLifetimes: the xfrm lifetimes of a CHILD SA follow its
// configuration as charon's child_cfg get_lifetime applies it
// (swanctl.conf(5): the soft limit is rekey_* less a random part of up to
// rand_*, the hard one life_*). The parser has applied swanctl's
// defaults already, so an explicit rand_time = 0 (or rand_bytes,
// rand_packets = 0) means no jitter at all, and rand_bytes and
// rand_packets jitter their soft limits as rand_time does.
func TestChildLifetimes(t *testing.T) {
	const trials = 64
	for _, c := range []struct {
		name                   string
		ch                     config.Child
		softS                  [2]uint64 // bounds of the soft limits
		softB, softP           [2]uint64
		hardS, hardB, hardP    uint64
		jitterS, jitterB, jitP bool // some trial below the bound
	}{
		{name: "rand_time=0", ch: config.Child{RekeyTime: 100 * time.Second, LifeTime: 110 * time.Second},
			softS: [2]uint64{100, 100}, hardS: 110},
		{name: "rand_time=10s", ch: config.Child{RekeyTime: 100 * time.Second, LifeTime: 110 * time.Second, RandTime: 10 * time.Second},
			softS: [2]uint64{90, 100}, hardS: 110, jitterS: true},
		{name: "rand_bytes=0", ch: config.Child{RekeyBytes: 1000, LifeBytes: 1100},
			softB: [2]uint64{1000, 1000}, hardB: 1100},
		{name: "rand_bytes=100", ch: config.Child{RekeyBytes: 1000, LifeBytes: 1100, RandBytes: 100},
			softB: [2]uint64{900, 1000}, hardB: 1100, jitterB: true},
		{name: "rand_packets=100", ch: config.Child{RekeyPackets: 1000, LifePackets: 1100, RandPackets: 100},
			softP: [2]uint64{900, 1000}, hardP: 1100, jitP: true},
		{name: "rekey_time=0", ch: config.Child{LifeTime: 110 * time.Second, RandTime: 110 * time.Second},
			hardS: 110},
	} {
		t.Run(c.name, func(t *testing.T) {
			var belowS, belowB, belowP bool
			for range trials {
				soft, hard := lifetimes(&c.ch)
				if soft.AddSeconds < c.softS[0] || soft.AddSeconds > c.softS[1] || soft.Bytes < c.softB[0] || soft.Bytes > c.softB[1] ||
					soft.Packets < c.softP[0] || soft.Packets > c.softP[1] {
					t.Fatalf("soft %+v outside seconds %v, bytes %v, packets %v", soft, c.softS, c.softB, c.softP)
				}
				if hard.AddSeconds != c.hardS || hard.Bytes != c.hardB || hard.Packets != c.hardP {
					t.Fatalf("hard %+v, want %d s, %d bytes, %d packets", hard, c.hardS, c.hardB, c.hardP)
				}
				belowS = belowS || soft.AddSeconds < c.softS[1]
				belowB = belowB || soft.Bytes < c.softB[1]
				belowP = belowP || soft.Packets < c.softP[1]
			}
			if belowS != c.jitterS || belowB != c.jitterB || belowP != c.jitP {
				t.Errorf("jitter in %d trials: seconds %v, bytes %v, packets %v; want %v, %v, %v", trials, belowS, belowB, belowP, c.jitterS, c.jitterB, c.jitP)
			}
		})
	}
}
