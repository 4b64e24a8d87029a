package message

import "encoding/binary"

// SA is the Security Association payload (RFC 7296 §3.3): the proposals
// of a request, or the one chosen proposal of a response.
type SA struct {
	Proposals []Proposal
}

// Proposal is one proposal substructure (RFC 7296 §3.3.1).
type Proposal struct {
	// Num is the Proposal Num: 1, 2, ... in a request; in a response the
	// number of the accepted proposal.
	Num uint8
	// Protocol is ProtoIKE, ProtoAH or ProtoESP.
	Protocol ProtocolID
	// SPI is the sender's SPI: empty in an IKE_SA_INIT, 8 bytes for an IKE
	// SA rekey, 4 bytes for AH and ESP.
	SPI []byte
	// Transforms are the transforms, in order of preference.
	Transforms []Transform
}

// Transform is one transform substructure (RFC 7296 §3.3.2).
type Transform struct {
	Type TransformType
	// ID is the transform ID, an IANA value within Type.
	ID uint16
	// Attributes are the transform attributes; only Key Length is defined.
	Attributes []Attribute
}

// KeyLength returns the value of the Key Length attribute in bits, and
// whether the transform has one.
func (t *Transform) KeyLength() (int, bool) {
	for _, a := range t.Attributes {
		if a.Type == AttrKeyLength && a.TV {
			return int(a.Value), true
		}
	}
	return 0, false
}

// Attribute is a transform attribute (RFC 7296 §3.3.5), in TV format
// (AF=1, a 16-bit value) or TLV format (AF=0, variable data).
type Attribute struct {
	// Type is the attribute type without the AF bit.
	Type AttributeType
	// TV selects the short format: Value is the value and Data is unused.
	TV bool
	// Value is the value of a TV attribute.
	Value uint16
	// Data is the value of a TLV attribute.
	Data []byte
}

// KeyLengthAttr returns the Key Length attribute for bits.
func KeyLengthAttr(bits int) Attribute {
	return Attribute{Type: AttrKeyLength, TV: true, Value: uint16(bits)}
}

// Type implements Payload.
func (*SA) Type() PayloadType { return PayloadSA }

const (
	proposalHeaderLen  = 8
	transformHeaderLen = 8
	lastSubstruc       = 0
	moreProposals      = 2
	moreTransforms     = 3
	attrFormatTV       = 0x8000
)

func decodeSA(_ PayloadType, b []byte, at int) (Payload, error) {
	sa := &SA{}
	off := 0
	for more := true; more; {
		pat := at + off
		if len(b)-off < proposalHeaderLen {
			return nil, syntaxErr(pat, PayloadSA, "%d bytes left, shorter than a proposal header", len(b)-off)
		}
		last := b[off]
		if last != lastSubstruc && last != moreProposals {
			return nil, syntaxErr(pat, PayloadSA, "proposal's Last Substruc is %d, not 0 or 2", last)
		}
		more = last == moreProposals
		n := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		spiSize := int(b[off+6])
		if n < proposalHeaderLen+spiSize || n > len(b)-off {
			return nil, syntaxErr(pat+2, PayloadSA, "proposal length %d does not fit SPI size %d and the %d bytes left", n, spiSize, len(b)-off)
		}
		p := Proposal{
			Num:      b[off+4],
			Protocol: ProtocolID(b[off+5]),
			SPI:      clone(b[off+8 : off+8+spiSize]),
		}
		count := int(b[off+7])
		ts, err := decodeTransforms(b[off+8+spiSize:off+n], count, pat+8+spiSize)
		if err != nil {
			return nil, err
		}
		p.Transforms = ts
		sa.Proposals = append(sa.Proposals, p)
		off += n
	}
	if off != len(b) {
		return nil, syntaxErr(at+off, PayloadSA, "%d bytes after the last proposal", len(b)-off)
	}
	return sa, nil
}

func decodeTransforms(b []byte, count int, at int) ([]Transform, error) {
	var ts []Transform
	off := 0
	for i := 0; i < count; i++ {
		tat := at + off
		if len(b)-off < transformHeaderLen {
			return nil, syntaxErr(tat, PayloadSA, "transform %d of %d: %d bytes left, shorter than a transform header", i+1, count, len(b)-off)
		}
		last := b[off]
		if want := byte(moreTransforms); i == count-1 {
			want = lastSubstruc
			if last != want {
				return nil, syntaxErr(tat, PayloadSA, "transform %d of %d has Last Substruc %d, want %d", i+1, count, last, want)
			}
		} else if last != want {
			return nil, syntaxErr(tat, PayloadSA, "transform %d of %d has Last Substruc %d, want %d", i+1, count, last, want)
		}
		n := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		if n < transformHeaderLen || n > len(b)-off {
			return nil, syntaxErr(tat+2, PayloadSA, "transform length %d does not fit the %d bytes left", n, len(b)-off)
		}
		t := Transform{Type: TransformType(b[off+4]), ID: binary.BigEndian.Uint16(b[off+6 : off+8])}
		attrs, err := decodeAttributes(b[off+transformHeaderLen:off+n], tat+transformHeaderLen)
		if err != nil {
			return nil, err
		}
		t.Attributes = attrs
		ts = append(ts, t)
		off += n
	}
	if off != len(b) {
		return nil, syntaxErr(at+off, PayloadSA, "%d bytes after transform %d of %d", len(b)-off, count, count)
	}
	return ts, nil
}

func decodeAttributes(b []byte, at int) ([]Attribute, error) {
	var as []Attribute
	off := 0
	for off < len(b) {
		if len(b)-off < 4 {
			return nil, syntaxErr(at+off, PayloadSA, "%d bytes left, shorter than an attribute", len(b)-off)
		}
		typ := binary.BigEndian.Uint16(b[off : off+2])
		v := binary.BigEndian.Uint16(b[off+2 : off+4])
		a := Attribute{Type: AttributeType(typ &^ attrFormatTV)}
		if typ&attrFormatTV != 0 {
			a.TV, a.Value = true, v
			off += 4
		} else {
			if int(v) > len(b)-off-4 {
				return nil, syntaxErr(at+off+2, PayloadSA, "attribute length %d exceeds the %d bytes left", v, len(b)-off-4)
			}
			a.Data = clone(b[off+4 : off+4+int(v)])
			off += 4 + int(v)
		}
		if a.Type == AttrKeyLength && !a.TV {
			return nil, syntaxErr(at+off, PayloadSA, "Key Length attribute in TLV format")
		}
		as = append(as, a)
	}
	return as, nil
}

func (sa *SA) appendBody(b []byte) ([]byte, error) {
	if len(sa.Proposals) == 0 {
		return nil, encodeErr(PayloadSA, "no proposal")
	}
	for i := range sa.Proposals {
		p := &sa.Proposals[i]
		if len(p.SPI) > 255 {
			return nil, encodeErr(PayloadSA, "proposal %d: SPI of %d bytes", p.Num, len(p.SPI))
		}
		if len(p.Transforms) > 255 {
			return nil, encodeErr(PayloadSA, "proposal %d: %d transforms", p.Num, len(p.Transforms))
		}
		last := byte(moreProposals)
		if i == len(sa.Proposals)-1 {
			last = lastSubstruc
		}
		pat := len(b)
		b = append(b, last, 0, 0, 0, p.Num, byte(p.Protocol), byte(len(p.SPI)), byte(len(p.Transforms)))
		b = append(b, p.SPI...)
		for j := range p.Transforms {
			t := &p.Transforms[j]
			last := byte(moreTransforms)
			if j == len(p.Transforms)-1 {
				last = lastSubstruc
			}
			tat := len(b)
			b = append(b, last, 0, 0, 0, byte(t.Type), 0)
			b = binary.BigEndian.AppendUint16(b, t.ID)
			for _, a := range t.Attributes {
				if uint16(a.Type)&attrFormatTV != 0 {
					return nil, encodeErr(PayloadSA, "attribute type %d does not fit 15 bits", a.Type)
				}
				if a.TV {
					b = binary.BigEndian.AppendUint16(b, uint16(a.Type)|attrFormatTV)
					b = binary.BigEndian.AppendUint16(b, a.Value)
					continue
				}
				if a.Type == AttrKeyLength {
					return nil, encodeErr(PayloadSA, "Key Length attribute must be TV")
				}
				if len(a.Data) > 0xffff {
					return nil, encodeErr(PayloadSA, "attribute of %d bytes", len(a.Data))
				}
				b = binary.BigEndian.AppendUint16(b, uint16(a.Type))
				b = binary.BigEndian.AppendUint16(b, uint16(len(a.Data)))
				b = append(b, a.Data...)
			}
			if n := len(b) - tat; n > 0xffff {
				return nil, encodeErr(PayloadSA, "transform of %d bytes", n)
			}
			binary.BigEndian.PutUint16(b[tat+2:], uint16(len(b)-tat))
		}
		if n := len(b) - pat; n > 0xffff {
			return nil, encodeErr(PayloadSA, "proposal of %d bytes", n)
		}
		binary.BigEndian.PutUint16(b[pat+2:], uint16(len(b)-pat))
	}
	return b, nil
}
