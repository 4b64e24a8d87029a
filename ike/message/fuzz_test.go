package message

import (
	"errors"
	"reflect"
	"testing"
)

// FuzzDecode checks that Decode never panics, that it fails only with
// this package's error types, and that whatever it accepts re-encodes to
// a message that decodes to the same value and re-encodes to the same
// bytes (encoding is a fixed point after one round). The checked-in
// corpus (testdata/fuzz/FuzzDecode) holds strongSwan 5.9.8's IKE_SA_INIT
// and IKE_AUTH messages from ike/testdata/strongswan.
func FuzzDecode(f *testing.F) {
	if b, err := everyPayload().Encode(); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m1, err := Decode(b)
		if err != nil {
			var e *Error
			var uc *UnsupportedCriticalPayloadError
			if !errors.As(err, &e) && !errors.As(err, &uc) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		b2, err := m1.Encode()
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		m2, err := Decode(b2)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		b3, err := m2.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if string(b3) != string(b2) {
			t.Fatalf("encoding is not a fixed point:\n%x\n%x", b2, b3)
		}
		// Skipped unknown payloads change the first payload type and the
		// length; everything else must survive.
		m1.NextPayload, m1.Length, m2.NextPayload, m2.Length = 0, 0, 0, 0
		if !reflect.DeepEqual(m1, m2) {
			t.Fatalf("round trip changed the message:\n%+v\n%+v", m1, m2)
		}
	})
}

// FuzzDecodePayloads is FuzzDecode for a payload chain on its own, the
// plaintext of an SK payload. Its corpus (testdata/fuzz/
// FuzzDecodePayloads) holds the decrypted IKE_AUTH payloads of the
// strongSwan vectors, written by ike/ikecrypto's TestStrongSwanKeys when
// IKE_WRITE_CORPUS is set.
func FuzzDecodePayloads(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte, first uint8) {
		ps, err := DecodePayloads(PayloadType(first), b, 0)
		if err != nil {
			var e *Error
			var uc *UnsupportedCriticalPayloadError
			if !errors.As(err, &e) && !errors.As(err, &uc) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		b2, err := AppendPayloads(nil, ps)
		if err != nil {
			t.Fatalf("decoded payloads do not encode: %v", err)
		}
		next := NoNextPayload
		if len(ps) > 0 {
			next = ps[0].Type()
		}
		ps2, err := DecodePayloads(next, b2, 0)
		if err != nil {
			t.Fatalf("re-encoded payloads do not decode: %v", err)
		}
		if !reflect.DeepEqual(ps, ps2) {
			t.Fatalf("round trip changed the payloads:\n%+v\n%+v", ps, ps2)
		}
	})
}
