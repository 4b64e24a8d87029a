package message

// Cert is the Certificate payload (RFC 7296 §3.6).
type Cert struct {
	Encoding CertEncoding
	// Data is the certificate (DER for CertX509Signature), CRL, or hash
	// and URL.
	Data []byte
}

// Type implements Payload.
func (*Cert) Type() PayloadType { return PayloadCERT }

func decodeCert(_ PayloadType, b []byte, at int) (Payload, error) {
	if len(b) < 1 {
		return nil, syntaxErr(at, PayloadCERT, "empty body")
	}
	return &Cert{Encoding: CertEncoding(b[0]), Data: clone(b[1:])}, nil
}

func (p *Cert) appendBody(b []byte) ([]byte, error) {
	return append(append(b, byte(p.Encoding)), p.Data...), nil
}

// CertReq is the Certificate Request payload (RFC 7296 §3.7).
type CertReq struct {
	Encoding CertEncoding
	// Authority is, for X.509, a concatenation of SHA-1 hashes of trusted
	// CAs' public keys (20 bytes each); may be empty.
	Authority []byte
}

// Type implements Payload.
func (*CertReq) Type() PayloadType { return PayloadCERTREQ }

func decodeCertReq(_ PayloadType, b []byte, at int) (Payload, error) {
	if len(b) < 1 {
		return nil, syntaxErr(at, PayloadCERTREQ, "empty body")
	}
	return &CertReq{Encoding: CertEncoding(b[0]), Authority: clone(b[1:])}, nil
}

func (p *CertReq) appendBody(b []byte) ([]byte, error) {
	return append(append(b, byte(p.Encoding)), p.Authority...), nil
}
