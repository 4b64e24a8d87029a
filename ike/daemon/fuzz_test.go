package daemon

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// FuzzDispatch feeds arbitrary datagrams to a running daemon's receive
// path, as from a peer on port 500 or 4500: nothing may panic, and the
// half-open IKE SAs that well-formed IKE_SA_INIT requests create stay
// within the budget.
func FuzzDispatch(f *testing.F) {
	x, err := exchange.NewInitiator(exchange.Config{Local: netip.AddrPortFrom(addrA4, 500), Remote: netip.AddrPortFrom(addrB4, 500),
		LocalID: exchange.FQDN("a.test"), RemoteID: exchange.FQDN("b.test"), PSK: []byte("k"),
		IKE:     exchange.IKESuite{Encr: message.ENCR_AES_CBC, KeyBits: 128, Integ: message.AUTH_HMAC_SHA2_256_128, PRF: message.PRF_HMAC_SHA2_256, KE: message.KE_CURVE25519},
		ESP:     exchange.ESPSuite{Encr: message.ENCR_AES_GCM_16, KeyBits: 128},
		LocalTS: []message.TrafficSelector{hostTS(addrA4)}, RemoteTS: []message.TrafficSelector{hostTS(addrB4)}})
	if err != nil {
		f.Fatal(err)
	}
	init1, _ := x.Start()
	f.Add(init1, false)
	f.Add(init1[:28], false)
	f.Add(append(make([]byte, 4), init1...), true)
	f.Add([]byte{0xff}, true)
	f.Add(make([]byte, 28), false)

	b := newBed(f, 4,
		connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartNone),
		connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone))
	d := b.db
	d.SetHalfOpenLimits(4, 8)
	f.Fuzz(func(t *testing.T, msg []byte, natt bool) {
		la, from := netip.AddrPortFrom(addrB4, 500), netip.AddrPortFrom(addrA4, 500)
		if natt {
			la, from = netip.AddrPortFrom(addrB4, NATTPort), netip.AddrPortFrom(addrA4, NATTPort)
			if len(msg) < 4 || msg[0]|msg[1]|msg[2]|msg[3] != 0 {
				return // not IKE: the socket reader drops it before dispatch
			}
			msg = msg[4:]
		}
		d.dispatch(la, from, append([]byte(nil), msg...), natt)
		time.Sleep(time.Millisecond) // let the SA goroutines take it
		if n := snap(d, "IKESAsHalfOpen"); n > 8 {
			t.Fatalf("%d half-open IKE SAs, budget 8", n)
		}
	})
}
