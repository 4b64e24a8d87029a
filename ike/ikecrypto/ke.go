package ikecrypto

import (
	"errors"
	"fmt"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

// ErrInvalidPublic is wrapped by the error for a peer's KE data that is
// of the wrong length or not a valid element of the group; the exchange
// fails (RFC 7296 §3.4 lengths, RFC 6989 checks).
var ErrInvalidPublic = errors.New("invalid peer key exchange value")

// KeyExchange is the initiator's half of a key exchange method (IANA
// transform type 4): a Diffie-Hellman private value, or a KEM decapsulation
// key. The responder's half is Respond.
type KeyExchange interface {
	// Method is the transform ID, message.KE_*.
	Method() uint16
	// Public returns the KE payload data to send: the public value, or
	// the KEM encapsulation key.
	Public() []byte
	// SharedSecret returns g^ir from the peer's KE data (its public value,
	// or the KEM ciphertext), in the form RFC 7296 §2.14 feeds to SKEYSEED.
	SharedSecret(peer []byte) ([]byte, error)
	// Wipe forgets the private value.
	Wipe()
}

// NewKeyExchange generates a fresh private value for method.
func NewKeyExchange(method uint16) (KeyExchange, error) {
	switch method {
	case message.KE_MODP2048:
		return newMODP(modp2048)
	case message.KE_ECP256, message.KE_ECP384, message.KE_CURVE25519:
		return newECDH(method, nil)
	case message.KE_MLKEM768, message.KE_MLKEM1024:
		return newMLKEM(method)
	}
	return nil, fmt.Errorf("ikecrypto: unsupported key exchange method %d", method)
}

// Respond is the responder's half: from the initiator's KE data it
// returns the responder's KE data and the shared secret. For a
// Diffie-Hellman group that is a fresh public value; for a KEM the
// ciphertext that encapsulates the secret.
func Respond(method uint16, peer []byte) (public, shared []byte, err error) {
	switch method {
	case message.KE_MLKEM768, message.KE_MLKEM1024:
		return mlkemEncapsulate(method, peer)
	}
	ke, err := NewKeyExchange(method)
	if err != nil {
		return nil, nil, err
	}
	defer ke.Wipe()
	shared, err = ke.SharedSecret(peer)
	if err != nil {
		return nil, nil, err
	}
	return ke.Public(), shared, nil
}

// Supported reports whether method is implemented here.
func Supported(method uint16) bool {
	switch method {
	case message.KE_MODP2048, message.KE_ECP256, message.KE_ECP384, message.KE_CURVE25519,
		message.KE_MLKEM768, message.KE_MLKEM1024:
		return true
	}
	return false
}

func invalidPublic(method uint16, format string, args ...any) error {
	return fmt.Errorf("ikecrypto: key exchange method %d: %s: %w", method, fmt.Sprintf(format, args...), ErrInvalidPublic)
}
