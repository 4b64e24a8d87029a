package swanctl

import (
	"fmt"
	"testing"
	"time"
)

// TestExplicitZeroLifetimes: a time or volume written as 0 stays 0 ("no
// jitter", "no over time"), distinct from leaving it out, which takes
// swanctl.conf(5)'s default (strongSwan 5.9.8 vici config.c: over_time
// 10% of rekey_time, rand_time min(over_time, rekey_time/2);
// check_lifetimes: life = rekey + 10%, rand = life - rekey).
func TestExplicitZeroLifetimes(t *testing.T) {
	for _, c := range []struct {
		conn, child                   string
		over, ikeRand, life, rand     time.Duration
		randBytes, randPackets, lifeB uint64
	}{
		{"rekey_time = 1000s", "rekey_time = 100s", 100 * time.Second, 100 * time.Second, 110 * time.Second, 10 * time.Second, 0, 0, 0},
		{"rekey_time = 1000s\n rand_time = 0", "rekey_time = 100s\n rand_time = 0", 100 * time.Second, 0, 110 * time.Second, 0, 0, 0, 0},
		{"rekey_time = 1000s\n over_time = 0", "rekey_time = 100s\n life_time = 100s", 0, 0, 100 * time.Second, 0, 0, 0, 0},
		{"rekey_time = 1000s\n over_time = 0\n rand_time = 50s", "rekey_bytes = 1000\n rand_bytes = 0\n rekey_packets = 10\n rand_packets = 0",
			0, 50 * time.Second, 3960 * time.Second, 360 * time.Second, 0, 0, 1100},
	} {
		t.Run(fmt.Sprintf("%q/%q", c.conn, c.child), func(t *testing.T) {
			cfg := mustParse(t, "connections { c {\n "+c.conn+"\n local { auth = psk }\n remote { auth = psk }\n children { x {\n "+c.child+"\n } }\n} }")
			conn := cfg.Connections[0]
			ch := conn.Children[0]
			if conn.OverTime != c.over || conn.RandTime != c.ikeRand {
				t.Errorf("IKE over_time %v rand_time %v, want %v %v", conn.OverTime, conn.RandTime, c.over, c.ikeRand)
			}
			if ch.LifeTime != c.life || ch.RandTime != c.rand || ch.RandBytes != c.randBytes || ch.RandPackets != c.randPackets || ch.LifeBytes != c.lifeB {
				t.Errorf("child life_time %v rand_time %v rand_bytes %d rand_packets %d life_bytes %d, want %v %v %d %d %d",
					ch.LifeTime, ch.RandTime, ch.RandBytes, ch.RandPackets, ch.LifeBytes, c.life, c.rand, c.randBytes, c.randPackets, c.lifeB)
			}
		})
	}
}
