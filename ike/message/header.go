package message

import "encoding/binary"

// HeaderLen is the length of the IKE header (RFC 7296 §3.1).
const HeaderLen = 28

// Version is the version octet this package sends: major 2, minor 0.
const Version = 0x20

// MaxMessageLen bounds an encoded message: the Length field is 32 bits but
// an IKE message travels in one UDP datagram (RFC 7296 §2; RFC 8229 TCP
// framing has a 16-bit length as well).
const MaxMessageLen = 65535

// Header is the IKE header (RFC 7296 §3.1).
type Header struct {
	// SPIi and SPIr are the IKE SA's initiator and responder SPIs; SPIr is
	// zero in the first IKE_SA_INIT request.
	SPIi, SPIr uint64
	// NextPayload is the first payload's type. Encode sets it from the
	// payload list; Decode reports what the message carried.
	NextPayload PayloadType
	// MajorVersion is 2; Decode rejects anything else.
	MajorVersion uint8
	// MinorVersion is 0 when sent, ignored when received (RFC 7296 §2.5).
	MinorVersion uint8
	// Exchange is the exchange type.
	Exchange ExchangeType
	// Flags holds the I, V and R bits and, preserved, any reserved bits.
	Flags Flags
	// MessageID orders requests and matches responses to them (§2.2).
	MessageID uint32
	// Length is the message length. Encode sets it; Decode reports it.
	Length uint32
}

// IsResponse reports whether the R flag is set.
func (h *Header) IsResponse() bool { return h.Flags&FlagResponse != 0 }

// IsInitiator reports whether the I flag is set: the sender is the
// original initiator of the IKE SA.
func (h *Header) IsInitiator() bool { return h.Flags&FlagInitiator != 0 }

// DecodeHeader decodes the IKE header at the start of b without looking
// at the payloads, for a receiver that must find the IKE SA (by SPIs) or
// check the message ID before it decrypts anything. It checks that the
// major version is 2 and that Length covers exactly b.
func DecodeHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderLen {
		return h, syntaxErr(0, NoNextPayload, "message of %d bytes is shorter than the %d-byte IKE header", len(b), HeaderLen)
	}
	h.SPIi = binary.BigEndian.Uint64(b[0:8])
	h.SPIr = binary.BigEndian.Uint64(b[8:16])
	h.NextPayload = PayloadType(b[16])
	h.MajorVersion = b[17] >> 4
	h.MinorVersion = b[17] & 0x0f
	h.Exchange = ExchangeType(b[18])
	h.Flags = Flags(b[19])
	h.MessageID = binary.BigEndian.Uint32(b[20:24])
	h.Length = binary.BigEndian.Uint32(b[24:28])
	if h.MajorVersion != 2 {
		return h, &Error{Offset: 17, Reason: "major version is not 2", Err: ErrInvalidMajorVersion}
	}
	if len(b) > MaxMessageLen {
		return h, syntaxErr(24, NoNextPayload, "message of %d bytes exceeds %d", len(b), MaxMessageLen)
	}
	if uint64(h.Length) != uint64(len(b)) {
		return h, syntaxErr(24, NoNextPayload, "length field %d does not match the %d bytes received", h.Length, len(b))
	}
	return h, nil
}

// appendHeader appends h with the given first payload type and length.
func appendHeader(b []byte, h *Header, next PayloadType, length int) []byte {
	b = binary.BigEndian.AppendUint64(b, h.SPIi)
	b = binary.BigEndian.AppendUint64(b, h.SPIr)
	maj := h.MajorVersion
	if maj == 0 {
		maj = 2
	}
	b = append(b, byte(next), maj<<4|h.MinorVersion&0x0f, byte(h.Exchange), byte(h.Flags))
	b = binary.BigEndian.AppendUint32(b, h.MessageID)
	return binary.BigEndian.AppendUint32(b, uint32(length))
}
