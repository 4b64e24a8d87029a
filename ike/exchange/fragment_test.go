package exchange

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
)

// fragProtector is a fixed AES-CBC-128/HMAC-SHA2-256-128 protector: the
// fuzz corpus was sealed with these keys, so its fragments authenticate.
func fragProtector(t testing.TB) *ikecrypto.Protector {
	encr, _ := ikecrypto.LookupEncr(message.ENCR_AES_CBC, 128)
	integ, _ := ikecrypto.LookupInteg(message.AUTH_HMAC_SHA2_256_128)
	p, err := ikecrypto.NewProtector(encr, integ, bytes.Repeat([]byte{0x11}, 16), bytes.Repeat([]byte{0x22}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var fragHeader = message.Header{SPIi: 0x0102030405060708, SPIr: 0x1112131415161718, Exchange: message.IKE_AUTH,
	Flags: message.FlagInitiator, MessageID: 1}

// bigInner is an IKE_AUTH-like payload chain of about n bytes.
func bigInner(n int) []message.Payload {
	cert := make([]byte, n)
	for k := range cert {
		cert[k] = byte(k * 7)
	}
	return []message.Payload{
		&message.ID{IDType: message.ID_FQDN, Data: []byte("initiator.test")},
		&message.Cert{Encoding: message.CertX509Signature, Data: cert},
		&message.Notify{NotifyType: message.INITIAL_CONTACT},
		&message.Auth{Method: message.AuthDigitalSignature, Data: bytes.Repeat([]byte{5}, 64)},
	}
}

func decodeSKF(t testing.TB, raw []byte) (*message.Message, *message.SKF) {
	t.Helper()
	m, err := message.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	skf, ok := m.Payloads[len(m.Payloads)-1].(*message.SKF)
	if !ok {
		t.Fatalf("last payload %T", m.Payloads[len(m.Payloads)-1])
	}
	return m, skf
}

// TestFragmentRoundTrip splits a message into RFC 7383 fragments no
// larger than asked (fragment 1 naming the first inner payload, the
// others NoNextPayload, §2.5) and reassembles them in reverse order with
// a duplicate and a forged fragment in between.
func TestFragmentRoundTrip(t *testing.T) {
	p := fragProtector(t)
	inner := bigInner(3000)
	frags, err := sealFragments(p, fragHeader, inner, 500)
	if err != nil {
		t.Fatal(err)
	}
	if len(frags) < 7 {
		t.Fatalf("%d fragments", len(frags))
	}
	for k, f := range frags {
		if len(f) > 500 {
			t.Errorf("fragment %d has %d bytes", k+1, len(f))
		}
		m, skf := decodeSKF(t, f)
		wantNext := message.NoNextPayload
		if k == 0 {
			wantNext = message.PayloadIDi
		}
		if m.MessageID != 1 || int(skf.Number) != k+1 || int(skf.Total) != len(frags) || skf.Next != wantNext {
			t.Errorf("fragment %d: ID %d, %d of %d, next %v", k+1, m.MessageID, skf.Number, skf.Total, skf.Next)
		}
	}
	var ra reassembler
	for k := len(frags) - 1; k >= 0; k-- {
		// A forged copy of a missing fragment is dropped before it is held.
		forged := append([]byte(nil), frags[k]...)
		forged[len(forged)-20] ^= 1
		fm, fskf := decodeSKF(t, forged)
		if _, err := ra.add(p, forged, fm, fskf); !errors.Is(err, ErrUnexpected) {
			t.Fatalf("forged fragment %d: %v", k+1, err)
		}
		m, skf := decodeSKF(t, frags[k])
		ps, err := ra.add(p, frags[k], m, skf)
		if k > 0 {
			if !errors.Is(err, errIncomplete) {
				t.Fatalf("fragment %d: %v", k+1, err)
			}
			if _, err := ra.add(p, frags[k], m, skf); !errors.Is(err, errIncomplete) {
				t.Fatalf("duplicate fragment: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(ps, inner) {
			t.Error("reassembled payloads differ")
		}
	}
	if ra.pending() {
		t.Error("reassembler holds fragments after completion")
	}
	// Small enough: one SK message.
	one, err := sealFragments(p, fragHeader, bigInner(100), 500)
	if err != nil || len(one) != 1 {
		t.Fatalf("%d messages, %v", len(one), err)
	}
	if m, _ := message.Decode(one[0]); m == nil || m.Payloads[0].Type() != message.PayloadSK {
		t.Error("small message not sent whole")
	}
}

// TestFragmentLimits: the reassembler's bounds and RFC 7383 §2.6.1's
// rules on Total Fragments and message IDs.
func TestFragmentLimits(t *testing.T) {
	p := fragProtector(t)
	add := func(ra *reassembler, raw []byte) error {
		m, skf := decodeSKF(t, raw)
		_, err := ra.add(p, raw, m, skf)
		return err
	}
	// More than MaxReassembled bytes: dropped once the bound is passed.
	big, err := sealFragments(p, fragHeader, bigInner(MaxReassembled+500), 1200)
	if err != nil {
		t.Fatal(err)
	}
	var ra reassembler
	var last error
	for _, f := range big {
		if last = add(&ra, f); !errors.Is(last, errIncomplete) {
			break
		}
	}
	if !errors.Is(last, ErrUnexpected) || ra.pending() {
		t.Errorf("oversized message: %v, pending %v", last, ra.pending())
	}
	// Too many fragments to send, and too many announced.
	if _, err := sealFragments(p, fragHeader, bigInner(MaxReassembled), 200); err == nil {
		t.Error("sealed more than MaxFragments fragments")
	}
	m := &message.Message{Header: fragHeader, Payloads: []message.Payload{&message.SKF{Number: 1, Total: MaxFragments + 1, Data: make([]byte, 64)}}}
	raw, _ := m.Encode()
	if err := add(&ra, raw); !errors.Is(err, ErrUnexpected) {
		t.Errorf("Total Fragments %d: %v", MaxFragments+1, err)
	}

	inner := bigInner(1500)
	three, _ := sealFragments(p, fragHeader, inner, 700)
	five, _ := sealFragments(p, fragHeader, inner, 450)
	if len(three) != 3 || len(five) != 5 {
		t.Fatalf("%d and %d fragments", len(three), len(five))
	}
	// A larger Total restarts the set; a smaller one afterwards is stale.
	ra = reassembler{}
	if err := add(&ra, three[0]); !errors.Is(err, errIncomplete) {
		t.Fatal(err)
	}
	for _, f := range five[:4] {
		if err := add(&ra, f); !errors.Is(err, errIncomplete) {
			t.Fatal(err)
		}
	}
	if err := add(&ra, three[1]); !errors.Is(err, ErrUnexpected) {
		t.Errorf("fragment of a smaller set: %v", err)
	}
	m5, skf5 := decodeSKF(t, five[4])
	if ps, err := ra.add(p, five[4], m5, skf5); err != nil || !reflect.DeepEqual(ps, inner) {
		t.Errorf("re-fragmented message: %v", err)
	}
	// Another message ID drops what was held.
	ra = reassembler{}
	add(&ra, three[0])
	h2 := fragHeader
	h2.MessageID = 2
	other, _ := sealFragments(p, h2, inner, 700)
	add(&ra, other[1])
	if ra.mid != 2 || ra.have != 1 {
		t.Errorf("reassembler kept message %d with %d fragments", ra.mid, ra.have)
	}
}

// TestFragmentedExchange runs IKE_AUTH with RSA-3072 certificates and an
// intermediate CA, whose messages exceed strongSwan's 1280-byte fragment
// size: both directions go out as fragments that fit, and a responder
// that declines fragmentation gets whole messages.
func TestFragmentedExchange(t *testing.T) {
	root := newPKI(t, "Test Root CA", "rsa3072")
	sub := root.intermediate(t, "Test Sub CA", "rsa3072")
	iCert, iKey := sub.endEntity(t, "initiator", "rsa3072", []string{"initiator.test"}, nil, nil)
	rCert, rKey := sub.endEntity(t, "responder", "rsa3072", []string{"responder.test"}, nil, nil)
	for _, tt := range []struct {
		name  string
		rFrag Fragmentation
		frags bool
	}{
		{"both fragment", FragmentYes, true},
		{"responder says no", FragmentNo, false},
		{"responder accepts only", FragmentAccept, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ci, cr := certConfigs(iCert, iKey, rCert, rKey, root.ca)
			ci.LocalAuth.Certs = []*x509.Certificate{iCert, sub.ca}
			cr.LocalAuth.Certs = []*x509.Certificate{rCert, sub.ca}
			cr.Fragmentation = tt.rFrag
			i, _ := NewInitiator(ci)
			r, _ := NewResponder(cr)
			first, _ := i.Start()
			resp, _, err := r.Handle(first)
			if err != nil {
				t.Fatal(err)
			}
			auth, _, err := i.Handle(resp[0])
			if err != nil {
				t.Fatal(err)
			}
			limit := maxIKEMessage(DefaultFragmentSize, false, false)
			if tt.frags != (len(auth) > 1) {
				t.Errorf("IKE_AUTH request in %d datagrams", len(auth))
			}
			var answer [][]byte
			for k, d := range auth {
				if tt.frags && len(d) > limit {
					t.Errorf("fragment of %d bytes, limit %d", len(d), limit)
				}
				out, done, err := r.Handle(d)
				if err != nil || (k < len(auth)-1) != (out == nil) || done != (k == len(auth)-1) {
					t.Fatalf("datagram %d: %d out, done %v, %v", k, len(out), done, err)
				}
				answer = out
			}
			// Responder: fragments when allowed to; a retransmitted request
			// is answered once, on its fragment 1.
			if (tt.rFrag == FragmentYes) != (len(answer) > 1) {
				t.Errorf("IKE_AUTH response in %d datagrams", len(answer))
			}
			for k, d := range auth {
				again, _, err := r.Handle(d)
				if err != nil || (k == 0) != (again != nil) {
					t.Errorf("retransmitted datagram %d answered with %d", k, len(again))
				}
			}
			for k, d := range answer {
				_, done, err := i.Handle(d)
				if err != nil || done != (k == len(answer)-1) {
					t.Fatalf("response datagram %d: done %v, %v", k, done, err)
				}
			}
			if !i.Result().Fragmentation != (tt.rFrag == FragmentNo) {
				t.Error("Result.Fragmentation")
			}
		})
	}
}

// FuzzReassemble feeds datagrams (each prefixed by a 2-byte length) to
// the reassembler: it must never panic, hold more than its bounds, or
// yield a message that does not come from authenticated fragments. The
// checked-in corpus (testdata/fuzz/FuzzReassemble) holds fragment sets
// sealed with fragProtector's keys, in and out of order.
func FuzzReassemble(f *testing.F) {
	p := fragProtector(f)
	frags, err := sealFragments(p, fragHeader, bigInner(900), 400)
	if err != nil {
		f.Fatal(err)
	}
	var seed []byte
	for k := len(frags) - 1; k >= 0; k-- {
		seed = binary.BigEndian.AppendUint16(seed, uint16(len(frags[k])))
		seed = append(seed, frags[k]...)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		var ra reassembler
		for len(b) >= 2 {
			n := int(binary.BigEndian.Uint16(b))
			b = b[2:]
			if n > len(b) {
				return
			}
			raw := b[:n]
			b = b[n:]
			m, err := message.Decode(raw)
			if err != nil || len(m.Payloads) == 0 {
				continue
			}
			skf, ok := m.Payloads[len(m.Payloads)-1].(*message.SKF)
			if !ok {
				continue
			}
			ps, err := ra.add(p, raw, m, skf)
			if ra.size > MaxReassembled || ra.have > int(ra.total) || ra.total > MaxFragments {
				t.Fatalf("reassembler holds %d bytes, %d of %d fragments", ra.size, ra.have, ra.total)
			}
			if err == nil && len(ps) == 0 {
				t.Fatal("complete message without payloads")
			}
		}
	})
}
