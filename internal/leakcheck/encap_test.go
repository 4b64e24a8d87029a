package leakcheck

import "testing"

// TestESPInUDPFragments: with ESP in UDP in use (ESPInUDPPorts set), the
// non-initial fragments of an ESP-in-UDP datagram (UDP, ports unknown)
// are no leak on their own when the datagram reassembles as ESP in UDP;
// a cleartext UDP datagram fragmented the same way is still one leak, and
// so is an incomplete one. Without the setting a portless UDP fragment
// stays a leak by itself (one finding per datagram), as before.
func TestESPInUDPFragments(t *testing.T) {
	encap := udp(4500, 4500, esp(0x1001, 3000))
	clear := udp(5000, 5001, payload(3008))
	for _, tc := range []struct {
		name   string
		ports  []uint16
		dgram  []byte
		frags  int // how many of the fragments are sent
		leaks  int
		during int // findings before Flush
	}{
		{"ESP in UDP, ports set", []uint16{4500}, encap, 3, 0, 0},
		{"cleartext UDP, ports set", []uint16{4500}, clear, 3, 1, 1},
		{"ESP in UDP, incomplete, ports set", []uint16{4500}, encap, 2, 1, 0},
		{"ESP in UDP, default ports", nil, encap, 3, 1, 1},
	} {
		c := New(Config{Flows: []Flow{allAB6}, ESPInUDPPorts: tc.ports})
		frags := fragment6(a6, b6, protoUDP, 77, tc.dgram, 1232)
		if len(frags) != 3 {
			t.Fatalf("%d fragments", len(frags))
		}
		// The tail first: the non-initial fragments arrive before the
		// one with the ports.
		for _, f := range []([]byte){frags[2], frags[1], frags[0]}[:tc.frags] {
			c.Packet(f)
		}
		during := len(c.Findings())
		c.Flush()
		if got := len(c.Findings()); got != tc.leaks || during != tc.during {
			t.Errorf("%s: %d findings (%d before Flush), want %d (%d): %v", tc.name, got, during, tc.leaks, tc.during, c.Findings())
		}
	}
}
