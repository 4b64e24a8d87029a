package esp

import "encoding/binary"

// Seal writes an ESP packet into dst (len(dst) >= SealedLen(len(payload)))
// and returns it. payload may start at dst[HeaderLen+IVLen()] (in place).
//
// If dst's capacity is too small a new buffer is allocated rather than
// panicking. seq is the full sequence number: its low 32 bits go on the
// wire, and with esn its high 32 bits enter the ICV (RFC 4303 §2.2.1).
// For the AEADs and counter mode the IV is seq XOR a random salt of this
// transform (seqIV), so seq must never repeat for one Transform.
// Seal returns nil after Zero.
func (t *Transform) Seal(dst []byte, spi uint32, seq uint64, esn bool, payload []byte, nextHeader uint8) []byte {
	eng := t.eng
	if eng == nil {
		return nil
	}
	n := len(payload)
	pad := t.padLen(n)
	total := HeaderLen + t.ivLen + n + pad + TrailerLen + t.icvLen
	var b []byte
	if cap(dst) >= total {
		b = dst[:total]
	} else {
		b = make([]byte, total)
	}
	off := HeaderLen + t.ivLen
	// Move the payload first: it may overlap the header or IV field, which
	// are written after it. Skip the copy when it is already in place.
	if n > 0 && &b[off] != &payload[0] {
		copy(b[off:off+n], payload)
	}
	// RFC 4303 §2.4: the default padding is 1, 2, 3, ...
	p := off + n
	for i := 1; i <= pad; i++ {
		b[p] = byte(i)
		p++
	}
	b[p] = byte(pad)
	b[p+1] = nextHeader
	binary.BigEndian.PutUint32(b[0:4], spi)
	binary.BigEndian.PutUint32(b[4:8], uint32(seq))
	eng.seal(b, seq, esn, t.testIV)
	return b
}
