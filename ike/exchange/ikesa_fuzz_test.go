package exchange

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// sealRaw seals arbitrary plaintext (a payload chain that may be
// malformed) in an SK payload from sender sa, as the peer would.
func sealRaw(sa *ikeSA, h message.Header, first message.PayloadType, pt []byte) []byte {
	n := sa.outP.SealedLen(len(pt))
	outer := &message.Message{Header: h, Payloads: []message.Payload{&message.SK{Next: first}}}
	b, err := outer.AppendEncode(nil)
	if err != nil {
		return nil
	}
	binary.BigEndian.PutUint32(b[24:28], uint32(len(b)+n))
	binary.BigEndian.PutUint16(b[len(b)-2:], uint16(4+n))
	out, err := sa.outP.Seal(b, pt)
	if err != nil {
		return nil
	}
	return out
}

// fuzzSeeds are inner payload chains of the requests and responses an
// established IKE SA sees, encoded by the message package.
func fuzzSeeds() [][]byte {
	ts := []message.TrafficSelector{prefixTS("10.1.0.0/16")}
	chains := [][]message.Payload{
		nil, // liveness
		{&message.Delete{Protocol: message.ProtoIKE}},
		{&message.Delete{Protocol: message.ProtoESP, SPISize: 4, SPIs: [][]byte{{1, 2, 3, 4}, {0, 0, 1, 0}}}},
		{&message.Notify{NotifyType: message.AUTHENTICATION_FAILED}},
		{&message.Notify{Protocol: message.ProtoESP, SPI: []byte{1, 2, 3, 4}, NotifyType: message.REKEY_SA},
			&message.SA{Proposals: []message.Proposal{{Num: 1, Protocol: message.ProtoESP, SPI: []byte{9, 9, 9, 9}, Transforms: suiteCBC.esp.Proposal().Transforms}}},
			&message.Nonce{Data: make([]byte, 32)}, &message.TS{Selectors: ts}, &message.TS{Responder: true, Selectors: ts}},
		{&message.SA{Proposals: []message.Proposal{{Num: 1, Protocol: message.ProtoIKE, SPI: []byte{1, 2, 3, 4, 5, 6, 7, 8}, Transforms: ikeOffer(suiteCBC.ike, []uint16{message.KE_CURVE25519})}}},
			&message.Nonce{Data: make([]byte, 32)}, &message.KE{Group: message.KE_CURVE25519, Data: make([]byte, 32)}},
		{&message.Notify{NotifyType: message.INVALID_KE_PAYLOAD, Data: []byte{0, 19}}},
		{&message.Notify{NotifyType: message.TEMPORARY_FAILURE}},
	}
	var out [][]byte
	for _, c := range chains {
		b, _ := message.AppendPayloads(nil, c)
		first := byte(message.NoNextPayload)
		if len(c) > 0 {
			first = byte(c[0].Type())
		}
		out = append(out, append([]byte{first}, b...))
	}
	return out
}

// FuzzIKESAHandle feeds an established IKE SA messages from its peer:
// raw bytes (mode bit 0 clear), or a payload chain sealed with the peer's
// real keys so that the handlers behind the integrity check see it, as a
// request (bit 1 clear) or as the response to an outstanding request,
// in CREATE_CHILD_SA (bit 2 clear) or INFORMATIONAL. Nothing may panic,
// and unauthenticated bytes are never answered.
func FuzzIKESAHandle(f *testing.F) {
	for _, s := range fuzzSeeds() {
		for mode := byte(0); mode < 8; mode++ {
			f.Add(append([]byte{mode | 1}, s...))
		}
	}
	f.Add([]byte{0})
	ci, cr := pairConfigs()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		n := establish(t, ci, cr, SAOptions{}, SAOptions{Children: []ChildConfig{extraChild(xfrm.ModeTunnel, nil, ESNNo)}})
		victim, peer := n.b, n.a
		now := n.now
		mode := data[0]
		if mode&1 == 0 {
			if out, _ := victim.Handle(data[1:], now); len(out) != 0 {
				t.Fatalf("unauthenticated bytes answered")
			}
			return
		}
		ex := message.CREATE_CHILD_SA
		if mode&4 != 0 {
			ex = message.INFORMATIONAL
		}
		sa, psa := victim.cur, peer.cur
		h := message.Header{SPIi: sa.spii, SPIr: sa.spir, Exchange: ex, MessageID: sa.peerNext}
		if psa.initiator {
			h.Flags |= message.FlagInitiator
		}
		if mode&2 != 0 {
			// A response to the victim's outstanding request.
			if ex == message.CREATE_CHILD_SA {
				victim.RekeyChild(1)
			} else {
				victim.Liveness()
			}
			victim.Tick(now)
			if sa.pending == nil {
				t.Fatal("no request outstanding")
			}
			h.MessageID = sa.pending.id
			h.Flags |= message.FlagResponse
		}
		msg := sealRaw(psa, h, message.PayloadType(data[1]), data[2:])
		if msg == nil {
			return
		}
		victim.Handle(msg, now)
		victim.Tick(now.Add(time.Hour))
	})
}
