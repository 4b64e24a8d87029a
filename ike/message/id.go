package message

import "strconv"

// ID is an Identification payload, IDi or IDr (RFC 7296 §3.5).
type ID struct {
	// Responder selects IDr; otherwise the payload is IDi.
	Responder bool
	// IDType says how to read Data.
	IDType IDType
	// Reserved is sent as zero but kept as received: it is part of the
	// octets that AUTH signs (RestOfInitIDPayload, RFC 7296 §2.15).
	Reserved [3]byte
	// Data is the identity: 4 or 16 address bytes, an FQDN or RFC 822
	// address without terminator, a DER DN or GN, or an opaque key ID.
	Data []byte
}

// Type implements Payload.
func (p *ID) Type() PayloadType {
	if p.Responder {
		return PayloadIDr
	}
	return PayloadIDi
}

// Body returns the payload body after the generic header, which RFC 7296
// §2.15 calls RestOfInitIDPayload/RestOfRespIDPayload and signs.
func (p *ID) Body() []byte {
	b, _ := p.appendBody(nil)
	return b
}

func decodeID(t PayloadType, b []byte, at int) (Payload, error) {
	if len(b) < 4 {
		return nil, syntaxErr(at, t, "body of %d bytes is shorter than 4", len(b))
	}
	p := &ID{Responder: t == PayloadIDr, IDType: IDType(b[0]), Data: clone(b[4:])}
	copy(p.Reserved[:], b[1:4])
	if err := checkIDLen(p.IDType, len(p.Data)); err != "" {
		return nil, syntaxErr(at+4, t, "%s", err)
	}
	return p, nil
}

func checkIDLen(t IDType, n int) string {
	switch t {
	case ID_IPV4_ADDR:
		if n != 4 {
			return "ID_IPV4_ADDR of " + strconv.Itoa(n) + " bytes"
		}
	case ID_IPV6_ADDR:
		if n != 16 {
			return "ID_IPV6_ADDR of " + strconv.Itoa(n) + " bytes"
		}
	}
	return ""
}

func (p *ID) appendBody(b []byte) ([]byte, error) {
	if err := checkIDLen(p.IDType, len(p.Data)); err != "" {
		return nil, encodeErr(p.Type(), "%s", err)
	}
	b = append(b, byte(p.IDType))
	b = append(b, p.Reserved[:]...)
	return append(b, p.Data...), nil
}
