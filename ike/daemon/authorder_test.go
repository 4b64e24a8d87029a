package daemon

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// authWatch calls onAuthResp, synchronously, when stack A writes an IKE
// message of exchange type 35 (IKE_AUTH) with the Response flag (RFC
// 7296 §3.1), parsed here from the frame's bytes.
type authWatch struct {
	nested.Endpoint
	lower      gstack.LinkEndpoint
	onAuthResp func()
}

func (w *authWatch) WritePackets(pkts gstack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		if ikeExchangeOf(pkt) == 35|0x20<<8 && w.onAuthResp != nil {
			w.onAuthResp()
		}
	}
	return w.lower.WritePackets(pkts)
}

// ikeExchangeOf returns the IKE exchange type of an IPv4 UDP frame from
// port 500 or 4500, with the flags octet in the high byte; 0 if it is
// not one.
func ikeExchangeOf(pkt *gstack.PacketBuffer) uint16 {
	v := pkt.ToView()
	defer v.Release()
	b := v.AsSlice()
	if len(b) < 14+20+8 || b[12] != 0x08 || b[13] != 0x00 {
		return 0
	}
	ip := b[14:]
	ihl := int(ip[0]&0xf) * 4
	if ip[9] != 17 || len(ip) < ihl+8 {
		return 0
	}
	udp := ip[ihl:]
	ike := udp[8:]
	switch binary.BigEndian.Uint16(udp[0:2]) {
	case 500:
	case 4500:
		if len(ike) < 4 || binary.BigEndian.Uint32(ike) != 0 {
			return 0
		}
		ike = ike[4:]
	default:
		return 0
	}
	if len(ike) < 28 {
		return 0
	}
	return uint16(ike[18]) | uint16(ike[19]&0x20)<<8
}

// TestResponderInstallsBeforeAuthResponse: the responder's IKE_AUTH
// response leaves only once its CHILD SA (policies and both SAs) is
// installed, as charon and Linux's key managers do. The initiator uses
// its SAs as soon as that response arrives; before, the responder sent
// it first and installed after, so the initiator's first packets met no
// inbound SA (XfrmInNoStates, seen in TestLiveRekeys) and the
// responder's own packets to the initiator, finding no policy yet, left
// in clear (the leak detector caught an echo request).
func TestResponderInstallsBeforeAuthResponse(t *testing.T) {
	cfgA := connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartNone)
	cfgB := connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone)
	var w *authWatch
	b := newBedWith(t, 4, cfgA, cfgB, func(l gstack.LinkEndpoint) gstack.LinkEndpoint {
		w = &authWatch{lower: l}
		w.Endpoint.Init(l, w)
		return w
	}, nil)
	var seen, installed atomic.Int32
	w.onAuthResp = func() {
		seen.Add(1)
		if espSAs(b.a.Engine) == 2 {
			installed.Add(1)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// B initiates; A, behind the watch, responds.
	if err := b.db.Initiate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	if seen.Load() == 0 {
		t.Fatal("A sent no IKE_AUTH response through the watch")
	}
	if installed.Load() != seen.Load() {
		t.Errorf("A sent %d IKE_AUTH responses, %d of them with its CHILD SA installed", seen.Load(), installed.Load())
	}
}
