package message

import "encoding/binary"

// Notify is the Notify payload (RFC 7296 §3.10).
type Notify struct {
	// Protocol is ProtoNone unless the notification is about an SA.
	Protocol ProtocolID
	// SPI is the SPI of that SA; empty otherwise.
	SPI []byte
	// NotifyType says what is notified.
	NotifyType NotifyType
	// Data is the type-specific notification data: a NAT-D SHA-1 hash, a
	// cookie, a 2-byte group for INVALID_KE_PAYLOAD, a list of 2-byte hash
	// algorithm IDs for SIGNATURE_HASH_ALGORITHMS, the 1-byte payload type
	// for UNSUPPORTED_CRITICAL_PAYLOAD, ...
	Data []byte
}

// Type implements Payload.
func (*Notify) Type() PayloadType { return PayloadNotify }

func decodeNotify(_ PayloadType, b []byte, at int) (Payload, error) {
	if len(b) < 4 {
		return nil, syntaxErr(at, PayloadNotify, "body of %d bytes is shorter than 4", len(b))
	}
	spiSize := int(b[1])
	if spiSize > len(b)-4 {
		return nil, syntaxErr(at+1, PayloadNotify, "SPI size %d exceeds the %d bytes left", spiSize, len(b)-4)
	}
	return &Notify{
		Protocol:   ProtocolID(b[0]),
		NotifyType: NotifyType(binary.BigEndian.Uint16(b[2:4])),
		SPI:        clone(b[4 : 4+spiSize]),
		Data:       clone(b[4+spiSize:]),
	}, nil
}

func (p *Notify) appendBody(b []byte) ([]byte, error) {
	if len(p.SPI) > 255 {
		return nil, encodeErr(PayloadNotify, "SPI of %d bytes", len(p.SPI))
	}
	b = append(b, byte(p.Protocol), byte(len(p.SPI)))
	b = binary.BigEndian.AppendUint16(b, uint16(p.NotifyType))
	return append(append(b, p.SPI...), p.Data...), nil
}
