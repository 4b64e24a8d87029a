package message

import "encoding/binary"

// Delete is the Delete payload (RFC 7296 §3.11).
type Delete struct {
	// Protocol is ProtoIKE (SPISize 0, no SPIs: the IKE SA the message
	// travels in) or ProtoAH/ProtoESP with 4-byte SPIs.
	Protocol ProtocolID
	// SPISize is the length of each SPI.
	SPISize uint8
	// SPIs are the SPIs of the SAs to delete.
	SPIs [][]byte
}

// Type implements Payload.
func (*Delete) Type() PayloadType { return PayloadDelete }

func decodeDelete(_ PayloadType, b []byte, at int) (Payload, error) {
	if len(b) < 4 {
		return nil, syntaxErr(at, PayloadDelete, "body of %d bytes is shorter than 4", len(b))
	}
	p := &Delete{Protocol: ProtocolID(b[0]), SPISize: b[1]}
	num := int(binary.BigEndian.Uint16(b[2:4]))
	if num*int(p.SPISize) != len(b)-4 {
		return nil, syntaxErr(at+2, PayloadDelete, "%d SPIs of %d bytes do not fill the %d bytes left", num, p.SPISize, len(b)-4)
	}
	if p.SPISize == 0 && num != 0 {
		// Zero-length SPIs carry nothing; a count without them is a lie
		// that would also make the encoding ambiguous.
		return nil, syntaxErr(at+2, PayloadDelete, "%d SPIs of size 0", num)
	}
	for i := 0; i < num; i++ {
		o := 4 + i*int(p.SPISize)
		p.SPIs = append(p.SPIs, clone(b[o:o+int(p.SPISize)]))
	}
	return p, nil
}

func (p *Delete) appendBody(b []byte) ([]byte, error) {
	if len(p.SPIs) > 0xffff {
		return nil, encodeErr(PayloadDelete, "%d SPIs", len(p.SPIs))
	}
	if p.SPISize == 0 && len(p.SPIs) != 0 {
		return nil, encodeErr(PayloadDelete, "%d SPIs of size 0", len(p.SPIs))
	}
	b = append(b, byte(p.Protocol), p.SPISize)
	b = binary.BigEndian.AppendUint16(b, uint16(len(p.SPIs)))
	for i, s := range p.SPIs {
		if len(s) != int(p.SPISize) {
			return nil, encodeErr(PayloadDelete, "SPI %d has %d bytes, not %d", i, len(s), p.SPISize)
		}
		b = append(b, s...)
	}
	return b, nil
}
