package esp

import "errors"

// Errors returned by Open. Callers count them separately (Linux's
// XfrmInStateProtoError covers all three), so they are distinct values.
var (
	// ErrICV means the integrity check failed: forged, corrupted, or sealed
	// with another key or sequence number.
	ErrICV = errors.New("esp: ICV mismatch")
	// ErrPadding means the packet authenticated but its trailer is
	// malformed: pad length beyond the payload or pad bytes not 1, 2, 3, ...
	ErrPadding = errors.New("esp: bad padding")
	// ErrTruncated means the packet is too short for its transform or its
	// ciphertext is not a multiple of the cipher's block size.
	ErrTruncated = errors.New("esp: packet too short")
	// ErrZeroed means the transform's keys were wiped by Zero.
	ErrZeroed = errors.New("esp: transform key material wiped")
)

// HeaderLen is the ESP header: SPI and sequence number.
const HeaderLen = 8

// TrailerLen is the fixed part of the ESP trailer: pad length and next
// header.
const TrailerLen = 2
