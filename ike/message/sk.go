package message

import "encoding/binary"

// SK is the Encrypted and Authenticated payload (RFC 7296 §3.14). It is
// always the last payload of a message; its body (IV, ciphertext with
// padding, ICV) is opaque here and protected by package ike/crypto.
type SK struct {
	// Next is the type of the first payload inside, which the SK payload's
	// Next Payload field carries.
	Next PayloadType
	// Data is the body: IV, encrypted payloads and padding, ICV.
	Data []byte
}

// Type implements Payload.
func (*SK) Type() PayloadType { return PayloadSK }

func decodeSK(_ PayloadType, b []byte, _ int) (Payload, error) {
	return &SK{Data: clone(b)}, nil
}

func (p *SK) appendBody(b []byte) ([]byte, error) { return append(b, p.Data...), nil }

// SKF is the Encrypted and Authenticated Fragment payload (RFC 7383
// §2.5), the last payload of a message that carries one fragment.
type SKF struct {
	// Next is the type of the first inner payload in fragment 1, and
	// NoNextPayload in the others.
	Next PayloadType
	// Number is the fragment number, from 1.
	Number uint16
	// Total is the number of fragments.
	Total uint16
	// Data is the protected fragment: IV, ciphertext and padding, ICV.
	Data []byte
}

// Type implements Payload.
func (*SKF) Type() PayloadType { return PayloadSKF }

func decodeSKF(_ PayloadType, b []byte, at int) (Payload, error) {
	if len(b) < 4 {
		return nil, syntaxErr(at, PayloadSKF, "body of %d bytes is shorter than 4", len(b))
	}
	p := &SKF{Number: binary.BigEndian.Uint16(b), Total: binary.BigEndian.Uint16(b[2:]), Data: clone(b[4:])}
	// RFC 7383 §2.6: numbering starts at 1; a number above the total is
	// invalid and the fragment is discarded.
	if p.Number == 0 || p.Number > p.Total {
		return nil, syntaxErr(at, PayloadSKF, "fragment %d of %d", p.Number, p.Total)
	}
	return p, nil
}

func (p *SKF) appendBody(b []byte) ([]byte, error) {
	if p.Number == 0 || p.Number > p.Total {
		return nil, encodeErr(PayloadSKF, "fragment %d of %d", p.Number, p.Total)
	}
	b = binary.BigEndian.AppendUint16(b, p.Number)
	b = binary.BigEndian.AppendUint16(b, p.Total)
	return append(b, p.Data...), nil
}
