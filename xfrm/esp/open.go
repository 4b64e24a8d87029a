package esp

// Open verifies and decrypts the ESP packet b in place. seq is the full
// 64-bit sequence number (high half inferred by the caller for ESN).
//
// The SPI and the low 32 bits of the sequence number are taken from the
// packet; only seq's high half is used, and only with esn. The returned
// payload aliases b. Open never panics on malformed input: short packets
// and ciphertexts that are not a block multiple give ErrTruncated,
// integrity failures ErrICV (checked before decrypting when integrity is
// separate), and malformed trailers ErrPadding.
func (t *Transform) Open(b []byte, seq uint64, esn bool) (payload []byte, nextHeader uint8, err error) {
	eng := t.eng
	if eng == nil {
		return nil, 0, ErrZeroed
	}
	ct := len(b) - HeaderLen - t.ivLen - t.icvLen
	if ct < TrailerLen || ct%t.ctBlock != 0 {
		return nil, 0, ErrTruncated
	}
	pt, err := eng.open(b, seq, esn)
	if err != nil {
		return nil, 0, err
	}
	return trimTrailer(pt)
}

// trimTrailer strips and checks the ESP trailer of a decrypted payload.
// The content is already authenticated (unless the SA has no integrity),
// so the checks need not be constant time.
func trimTrailer(pt []byte) ([]byte, uint8, error) {
	n := len(pt)
	if n < TrailerLen {
		return nil, 0, ErrTruncated
	}
	padLen := int(pt[n-2])
	nh := pt[n-1]
	end := n - TrailerLen - padLen
	if end < 0 {
		return nil, 0, ErrPadding
	}
	for i, c := range pt[end : n-TrailerLen] {
		if c != byte(i+1) {
			return nil, 0, ErrPadding
		}
	}
	return pt[:end], nh, nil
}
