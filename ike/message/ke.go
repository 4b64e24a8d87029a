package message

import "encoding/binary"

// KE is the Key Exchange payload (RFC 7296 §3.4).
type KE struct {
	// Group is the key exchange method (Diffie-Hellman group) number.
	Group uint16
	// Data is the public value, or for a KEM the encapsulation key or
	// ciphertext.
	Data []byte
}

// Type implements Payload.
func (*KE) Type() PayloadType { return PayloadKE }

func decodeKE(_ PayloadType, b []byte, at int) (Payload, error) {
	if len(b) < 4 {
		return nil, syntaxErr(at, PayloadKE, "body of %d bytes is shorter than 4", len(b))
	}
	return &KE{Group: binary.BigEndian.Uint16(b), Data: clone(b[4:])}, nil
}

func (p *KE) appendBody(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, p.Group)
	return append(append(b, 0, 0), p.Data...), nil
}
