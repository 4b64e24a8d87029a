package exchange

import (
	"testing"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

// applyEdits changes a copy of msg by edits, read as triples (offset
// high, offset low, XOR mask); a last lone byte truncates that many bytes
// off the end. The fuzzer so mutates each run's genuine message (whose
// nonces and keys are fresh) instead of guessing a whole one.
func applyEdits(msg, edits []byte) []byte {
	b := append([]byte(nil), msg...)
	for ; len(edits) >= 3; edits = edits[3:] {
		if off := int(edits[0])<<8 | int(edits[1]); off < len(b) {
			b[off] ^= edits[2]
		}
	}
	if len(edits) == 1 {
		b = b[:len(b)-min(len(b), int(edits[0]))]
	}
	return b
}

// FuzzHandshake runs a fresh PSK handshake and hands one side a mutated
// copy of one of its messages (stage: 0 the responder's IKE_SA_INIT
// request, 1 its IKE_AUTH request, 2 raw bytes instead of IKE_SA_INIT, 3
// the initiator's IKE_SA_INIT response, 4 its IKE_AUTH response). Nothing
// may panic, and a changed message that a side does not accept must cost
// it nothing: after an altered IKE_AUTH request or response (both
// authenticated), the genuine message still completes the exchange
// (RFC 7296 §2.21: unauthenticated garbage is dropped, not fatal).
func FuzzHandshake(f *testing.F) {
	f.Add(uint8(0), []byte{})
	f.Add(uint8(0), []byte{0, 17, 0x01})              // flags
	f.Add(uint8(0), []byte{0, 30, 0xff, 0, 40, 0x80}) // into the SA payload
	f.Add(uint8(1), []byte{0, 60, 0x01})
	f.Add(uint8(1), []byte{16})
	f.Add(uint8(2), []byte("not an IKE message"))
	f.Add(uint8(3), []byte{0, 36, 0x01})
	f.Add(uint8(4), []byte{0, 100, 0x04})
	f.Add(uint8(4), []byte{0, 19, 0x01}) // message ID
	f.Fuzz(func(t *testing.T, stage uint8, edits []byte) {
		ci, cr := configs(suites[0].ike, suites[0].esp)
		i, err := NewInitiator(ci)
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewResponder(cr)
		if err != nil {
			t.Fatal(err)
		}
		init, err := i.Start()
		if err != nil {
			t.Fatal(err)
		}
		switch stage % 5 {
		case 0:
			if out, _, _ := r.Handle(applyEdits(init, edits)); len(out) > 0 {
				if _, err := message.Decode(out[0]); err != nil {
					t.Fatalf("responder answered what does not decode: %v", err)
				}
			}
			return
		case 2:
			r.Handle(edits)
			return
		}
		initResp, _, err := r.Handle(init)
		if err != nil || len(initResp) != 1 {
			t.Fatalf("IKE_SA_INIT: %v (%d datagrams)", err, len(initResp))
		}
		if stage%5 == 3 {
			i.Handle(applyEdits(initResp[0], edits))
			return
		}
		auth, _, err := i.Handle(initResp[0])
		if err != nil || len(auth) == 0 {
			t.Fatalf("IKE_AUTH request: %v", err)
		}
		if stage%5 == 1 {
			bad := applyEdits(auth[0], edits)
			if _, done, _ := r.Handle(bad); done {
				return // the edits changed nothing the responder reads
			}
		}
		authResp, rdone, err := r.Handle(auth[0])
		if err != nil || !rdone {
			t.Fatalf("the genuine IKE_AUTH request after an altered one: done %v, %v", rdone, err)
		}
		if stage%5 == 4 {
			if _, done, _ := i.Handle(applyEdits(authResp[0], edits)); done {
				return
			}
		}
		if _, idone, err := i.Handle(authResp[0]); err != nil || !idone {
			t.Fatalf("the genuine IKE_AUTH response after an altered one: done %v, %v", idone, err)
		}
	})
}
