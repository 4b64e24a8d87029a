package ikecrypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

// ErrAuthentication is returned by Open when the ICV does not verify; the
// message is dropped without a reply (RFC 7296 §2.21.2, §3.14).
var ErrAuthentication = errors.New("ikecrypto: Encrypted payload integrity check failed")

// Protector protects the Encrypted (SK) payloads of one direction of an
// IKE SA (RFC 7296 §3.14): the initiator's messages with SK_ei/SK_ai,
// the responder's with SK_er/SK_ar. It is not safe for concurrent Seal
// calls: an IKE SA sends one message at a time.
type Protector struct {
	encr  *Encr
	integ *Integ

	block    cipher.Block // AES-CBC
	integKey []byte
	aead     cipher.AEAD // GCM, ChaCha20-Poly1305
	salt     []byte
	counter  uint64 // AEAD IVs: a counter never repeats under one key
}

// NewProtector returns a Protector for the negotiated transforms. integ is
// nil with an AEAD. The keys are copied.
func NewProtector(encr *Encr, integ *Integ, encKey, integKey []byte) (*Protector, error) {
	if len(encKey) != encr.KeyLen() {
		return nil, fmt.Errorf("ikecrypto: encryption key of %d bytes for transform %d, want %d", len(encKey), encr.ID, encr.KeyLen())
	}
	p := &Protector{encr: encr, integ: integ}
	key := encKey[:encr.KeyBits/8]
	var err error
	switch {
	case encr.ID == message.ENCR_CHACHA20_POLY1305:
		p.aead, err = chacha20poly1305.New(key)
	case encr.AEAD:
		var b cipher.Block
		if b, err = aes.NewCipher(key); err == nil {
			p.aead, err = cipher.NewGCMWithTagSize(b, encr.ICVLen)
		}
	default:
		if integ == nil {
			return nil, fmt.Errorf("ikecrypto: encryption transform %d needs an integrity transform", encr.ID)
		}
		if len(integKey) != integ.KeyLen {
			return nil, fmt.Errorf("ikecrypto: integrity key of %d bytes for transform %d, want %d", len(integKey), integ.ID, integ.KeyLen)
		}
		p.block, err = aes.NewCipher(key)
		p.integKey = append([]byte(nil), integKey...)
	}
	if err != nil {
		return nil, fmt.Errorf("ikecrypto: encryption transform %d: %v", encr.ID, err)
	}
	if encr.AEAD {
		if integ != nil {
			return nil, fmt.Errorf("ikecrypto: AEAD transform %d with an integrity transform", encr.ID)
		}
		p.salt = append([]byte(nil), encKey[len(key):]...)
	}
	return p, nil
}

func (p *Protector) icvLen() int {
	if p.aead != nil {
		return p.encr.ICVLen
	}
	return p.integ.ICVLen
}

// SealedLen returns the length of the SK payload body (IV, ciphertext
// with padding and Pad Length, ICV) that Seal appends for a plaintext of
// n bytes. The caller needs it to write the IKE header's Length and the
// SK payload's length before sealing, since both are authenticated.
func (p *Protector) SealedLen(n int) int {
	n++ // Pad Length
	if bl := p.encr.BlockLen; bl > 1 {
		n = (n + bl - 1) / bl * bl
	}
	return p.encr.IVLen + n + p.icvLen()
}

// Seal appends the protected form of plaintext (the inner payload chain)
// to msg. msg holds the message so far: the IKE header and every payload
// up to and including the SK payload's generic header, with the header's
// Length and the SK payload length already set to their final values
// (see SealedLen). For an AEAD, msg is the associated data (RFC 5282 §5.1);
// otherwise the ICV covers msg and the encrypted body (RFC 7296 §3.14).
func (p *Protector) Seal(msg, plaintext []byte) ([]byte, error) {
	start := len(msg)
	body := p.SealedLen(len(plaintext))
	padded := body - p.encr.IVLen - p.icvLen()
	out := append(msg, make([]byte, body)...)
	iv := out[start : start+p.encr.IVLen]
	ct := out[start+p.encr.IVLen : start+p.encr.IVLen+padded]
	copy(ct, plaintext)
	// Padding may hold any value (§3.14); zeros. Pad Length is last.
	ct[padded-1] = byte(padded - 1 - len(plaintext))
	if p.aead != nil {
		p.counter++
		if p.counter == 0 {
			return nil, errors.New("ikecrypto: AEAD IV counter exhausted; rekey the IKE SA")
		}
		binary.BigEndian.PutUint64(iv, p.counter)
		nonce := p.nonce(iv)
		sealed := p.aead.Seal(ct[:0], nonce, ct, out[:start])
		if len(sealed) != padded+p.encr.ICVLen {
			return nil, errors.New("ikecrypto: AEAD output length mismatch")
		}
		return out, nil
	}
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	cipher.NewCBCEncrypter(p.block, iv).CryptBlocks(ct, ct)
	icvAt := start + p.encr.IVLen + padded
	copy(out[icvAt:], p.integ.ICV(p.integKey, out[:icvAt]))
	return out, nil
}

func (p *Protector) nonce(iv []byte) []byte {
	n := make([]byte, 0, len(p.salt)+len(iv))
	return append(append(n, p.salt...), iv...)
}

// Open verifies and decrypts the SK payload whose body starts at
// msg[bodyAt] and runs to the end of msg (an Encrypted payload is always
// last), and returns the inner payload chain without padding. msg is not
// modified. Callers find bodyAt as len(msg) - len(sk.Data) for the
// decoded *message.SK.
func (p *Protector) Open(msg []byte, bodyAt int) ([]byte, error) {
	if bodyAt < message.HeaderLen+4 || bodyAt > len(msg) {
		return nil, fmt.Errorf("ikecrypto: SK body offset %d outside a message of %d bytes", bodyAt, len(msg))
	}
	body := msg[bodyAt:]
	ivLen, icv := p.encr.IVLen, p.icvLen()
	if len(body) < ivLen+1+icv {
		return nil, fmt.Errorf("ikecrypto: SK body of %d bytes is shorter than IV, Pad Length and ICV (%d)", len(body), ivLen+1+icv)
	}
	iv := body[:ivLen]
	var pt []byte
	if p.aead != nil {
		var err error
		pt, err = p.aead.Open(nil, p.nonce(iv), body[ivLen:], msg[:bodyAt])
		if err != nil {
			return nil, ErrAuthentication
		}
	} else {
		ct := body[ivLen : len(body)-icv]
		want := p.integ.ICV(p.integKey, msg[:len(msg)-icv])
		if subtle.ConstantTimeCompare(want, body[len(body)-icv:]) != 1 {
			return nil, ErrAuthentication
		}
		if len(ct)%p.encr.BlockLen != 0 {
			return nil, fmt.Errorf("ikecrypto: SK ciphertext of %d bytes is not a multiple of the %d-byte block", len(ct), p.encr.BlockLen)
		}
		pt = make([]byte, len(ct))
		cipher.NewCBCDecrypter(p.block, iv).CryptBlocks(pt, ct)
	}
	padLen := int(pt[len(pt)-1])
	if padLen+1 > len(pt) {
		clear(pt)
		return nil, fmt.Errorf("ikecrypto: SK Pad Length %d exceeds the %d decrypted bytes", padLen, len(pt)-1)
	}
	return pt[:len(pt)-1-padLen], nil
}
