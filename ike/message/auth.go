package message

// Auth is the Authentication payload (RFC 7296 §3.8).
type Auth struct {
	Method AuthMethod
	// Data is the MAC (AuthSharedKeyMIC) or signature.
	Data []byte
}

// Type implements Payload.
func (*Auth) Type() PayloadType { return PayloadAUTH }

func decodeAuth(_ PayloadType, b []byte, at int) (Payload, error) {
	if len(b) < 4 {
		return nil, syntaxErr(at, PayloadAUTH, "body of %d bytes is shorter than 4", len(b))
	}
	return &Auth{Method: AuthMethod(b[0]), Data: clone(b[4:])}, nil
}

func (p *Auth) appendBody(b []byte) ([]byte, error) {
	return append(append(b, byte(p.Method), 0, 0, 0), p.Data...), nil
}
