package message

// Nonce is the Nonce payload (RFC 7296 §3.9).
type Nonce struct {
	Data []byte
}

// Nonce lengths allowed by RFC 7296 §3.9.
const (
	MinNonceLen = 16
	MaxNonceLen = 256
)

// Type implements Payload.
func (*Nonce) Type() PayloadType { return PayloadNonce }

func decodeNonce(_ PayloadType, b []byte, at int) (Payload, error) {
	if len(b) < MinNonceLen || len(b) > MaxNonceLen {
		return nil, syntaxErr(at, PayloadNonce, "nonce of %d bytes, not %d..%d", len(b), MinNonceLen, MaxNonceLen)
	}
	return &Nonce{Data: clone(b)}, nil
}

func (p *Nonce) appendBody(b []byte) ([]byte, error) {
	if len(p.Data) < MinNonceLen || len(p.Data) > MaxNonceLen {
		return nil, encodeErr(PayloadNonce, "nonce of %d bytes, not %d..%d", len(p.Data), MinNonceLen, MaxNonceLen)
	}
	return append(b, p.Data...), nil
}
