package message

import "encoding/binary"

// Payload is one decoded IKEv2 payload. The concrete types are the
// pointers *SA, *KE, *Nonce, *ID, *Cert, *CertReq, *Auth, *Notify,
// *Delete, *VendorID, *TS, *SK, *SKF and *Raw.
type Payload interface {
	// Type returns the payload type that names this payload in the
	// preceding Next Payload field.
	Type() PayloadType
	// appendBody appends the payload body, everything after the 4-byte
	// generic payload header.
	appendBody(b []byte) ([]byte, error)
}

// genericHeaderLen is the length of the generic payload header (RFC 7296
// §3.2): Next Payload, C bit and reserved, Payload Length.
const genericHeaderLen = 4

// criticalBit is the C bit in the second octet of the generic header.
const criticalBit = 0x80

// Message is an IKEv2 message: the header and the payload chain in order.
type Message struct {
	Header
	// Payloads are the payloads in wire order. An SK or SKF payload, if
	// any, is last: its body holds the rest of the chain, encrypted.
	Payloads []Payload
}

// Decode decodes an IKEv2 message, header and payload chain. b must hold
// exactly one message (one UDP datagram, without the non-ESP marker of
// port 4500). The result does not alias b.
func Decode(b []byte) (*Message, error) {
	h, err := DecodeHeader(b)
	if err != nil {
		return nil, err
	}
	ps, err := decodeChain(b[HeaderLen:], h.NextPayload, HeaderLen)
	if err != nil {
		return nil, err
	}
	return &Message{Header: h, Payloads: ps}, nil
}

// DecodePayloads decodes a payload chain that starts with a payload of
// type first: the plaintext of an SK payload, whose first type is SK.Next.
// base is added to every offset in errors (the plaintext's position, for
// the reader of a log).
func DecodePayloads(first PayloadType, b []byte, base int) ([]Payload, error) {
	return decodeChain(b, first, base)
}

// decodeChain walks a payload chain. An SK or SKF payload ends the chain:
// its Next Payload field names the first payload inside it (RFC 7296
// §3.14), so nothing may follow it.
func decodeChain(b []byte, next PayloadType, base int) ([]Payload, error) {
	var ps []Payload
	off := 0
	for next != NoNextPayload {
		t := next
		at := base + off
		if len(b)-off < genericHeaderLen {
			return nil, syntaxErr(at, t, "%d bytes left, shorter than a payload header", len(b)-off)
		}
		next = PayloadType(b[off])
		critical := b[off+1]&criticalBit != 0
		n := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		if n < genericHeaderLen {
			return nil, syntaxErr(at+2, t, "payload length %d is shorter than the payload header", n)
		}
		if n > len(b)-off {
			return nil, syntaxErr(at+2, t, "payload length %d exceeds the %d bytes left", n, len(b)-off)
		}
		body := b[off+genericHeaderLen : off+n]
		bodyAt := at + genericHeaderLen
		off += n
		dec := decoders[t]
		if dec == nil {
			if critical {
				return nil, &UnsupportedCriticalPayloadError{Type: t, Offset: at}
			}
			continue // RFC 7296 §2.5: skip an unknown non-critical payload
		}
		p, err := dec(t, body, bodyAt)
		if err != nil {
			return nil, err
		}
		switch p := p.(type) {
		case *SK:
			p.Next = next
			next = NoNextPayload
		case *SKF:
			p.Next = next
			next = NoNextPayload
		}
		ps = append(ps, p)
	}
	if off != len(b) {
		return nil, syntaxErr(base+off, NoNextPayload, "%d bytes after the last payload", len(b)-off)
	}
	return ps, nil
}

type decoder func(t PayloadType, body []byte, at int) (Payload, error)

var decoders map[PayloadType]decoder

func init() {
	decoders = map[PayloadType]decoder{
		PayloadSA:       decodeSA,
		PayloadKE:       decodeKE,
		PayloadIDi:      decodeID,
		PayloadIDr:      decodeID,
		PayloadCERT:     decodeCert,
		PayloadCERTREQ:  decodeCertReq,
		PayloadAUTH:     decodeAuth,
		PayloadNonce:    decodeNonce,
		PayloadNotify:   decodeNotify,
		PayloadDelete:   decodeDelete,
		PayloadVendorID: decodeVendorID,
		PayloadTSi:      decodeTS,
		PayloadTSr:      decodeTS,
		PayloadSK:       decodeSK,
		PayloadCP:       decodeRaw,
		PayloadEAP:      decodeRaw,
		PayloadGSPM:     decodeRaw,
		PayloadSKF:      decodeSKF,
	}
}

// Encode encodes m, setting the header's NextPayload and Length from the
// payloads. An SK or SKF payload must be last.
func (m *Message) Encode() ([]byte, error) {
	return m.AppendEncode(make([]byte, 0, 512))
}

// AppendEncode appends the encoding of m to b.
func (m *Message) AppendEncode(b []byte) ([]byte, error) {
	start := len(b)
	first := NoNextPayload
	if len(m.Payloads) > 0 {
		first = m.Payloads[0].Type()
	}
	b = appendHeader(b, &m.Header, first, 0)
	b, err := AppendPayloads(b, m.Payloads)
	if err != nil {
		return nil, err
	}
	n := len(b) - start
	if n > MaxMessageLen {
		return nil, encodeErr(NoNextPayload, "message of %d bytes exceeds %d", n, MaxMessageLen)
	}
	binary.BigEndian.PutUint32(b[start+24:start+28], uint32(n))
	return b, nil
}

// AppendPayloads appends a payload chain to b: the plaintext of an SK
// payload, or the payloads after the IKE header. The first payload's type
// goes in the field before the chain (the header's, or SK.Next).
func AppendPayloads(b []byte, ps []Payload) ([]byte, error) {
	for i, p := range ps {
		next := NoNextPayload
		switch p := p.(type) {
		case *SK:
			if i != len(ps)-1 {
				return nil, encodeErr(PayloadSK, "not the last payload")
			}
			next = p.Next
		case *SKF:
			if i != len(ps)-1 {
				return nil, encodeErr(PayloadSKF, "not the last payload")
			}
			next = p.Next
		default:
			if i+1 < len(ps) {
				next = ps[i+1].Type()
			}
		}
		at := len(b)
		b = append(b, byte(next), 0, 0, 0)
		var err error
		b, err = p.appendBody(b)
		if err != nil {
			return nil, err
		}
		n := len(b) - at
		if n > 0xffff {
			return nil, encodeErr(p.Type(), "payload of %d bytes exceeds 65535", n)
		}
		binary.BigEndian.PutUint16(b[at+2:at+4], uint16(n))
	}
	return b, nil
}

// clone copies b; an empty b yields nil, so decoded values compare equal
// whatever buffer they came from.
func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}
