package message

import (
	"errors"
	"fmt"
)

// ErrInvalidSyntax is wrapped by every *Error about malformed input; an
// IKE SA answers it with INVALID_SYNTAX once the peer is authenticated
// (RFC 7296 §2.21.2) and drops it otherwise.
var ErrInvalidSyntax = errors.New("invalid syntax")

// ErrInvalidMajorVersion is wrapped by the *Error for a header whose major
// version is not 2; the answer is INVALID_MAJOR_VERSION (RFC 7296 §2.5).
var ErrInvalidMajorVersion = errors.New("invalid major version")

// Error reports malformed input: what is wrong and where. It never holds
// payload contents, only types, lengths and offsets.
type Error struct {
	// Offset is the byte offset from the start of the decoded buffer
	// (the IKE header, or the decrypted SK contents plus the base given to
	// DecodePayloads) at which the faulty field starts.
	Offset int
	// Payload is the payload being decoded; NoNextPayload for the header.
	Payload PayloadType
	// Reason says what is wrong.
	Reason string
	// Err is ErrInvalidSyntax or ErrInvalidMajorVersion.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	where := "IKE header"
	if e.Payload != NoNextPayload {
		where = e.Payload.String() + " payload"
	}
	return fmt.Sprintf("ike message: %s at offset %d: %s", where, e.Offset, e.Reason)
}

// Unwrap returns ErrInvalidSyntax or ErrInvalidMajorVersion.
func (e *Error) Unwrap() error { return e.Err }

func syntaxErr(off int, p PayloadType, format string, args ...any) *Error {
	return &Error{Offset: off, Payload: p, Reason: fmt.Sprintf(format, args...), Err: ErrInvalidSyntax}
}

// UnsupportedCriticalPayloadError reports a payload of a type this package
// does not know whose critical bit is set. RFC 7296 §2.5: the whole
// message is rejected and, for a request, UNSUPPORTED_CRITICAL_PAYLOAD is
// sent with the one-octet payload type as notification data.
type UnsupportedCriticalPayloadError struct {
	// Type is the unknown payload type.
	Type PayloadType
	// Offset is where the payload's generic header starts.
	Offset int
}

// Error implements error.
func (e *UnsupportedCriticalPayloadError) Error() string {
	return fmt.Sprintf("ike message: unsupported critical payload type %d at offset %d", uint8(e.Type), e.Offset)
}

// EncodeError reports a value that cannot be encoded, such as a field
// longer than its length field can express.
type EncodeError struct {
	// Payload is the payload being encoded; NoNextPayload for the header.
	Payload PayloadType
	// Reason says what is wrong.
	Reason string
}

// Error implements error.
func (e *EncodeError) Error() string {
	where := "IKE header"
	if e.Payload != NoNextPayload {
		where = e.Payload.String() + " payload"
	}
	return "ike message: cannot encode " + where + ": " + e.Reason
}

func encodeErr(p PayloadType, format string, args ...any) *EncodeError {
	return &EncodeError{Payload: p, Reason: fmt.Sprintf(format, args...)}
}
