package esp

import "fmt"

// Transform is the keyed ESP transform of one SA. Safe for concurrent use.
type Transform struct {
	eng    engine
	ivLen  int
	icvLen int
	// align is the padding unit: the cipher block size, but at least 4 so
	// that pad length and next header end on a 32-bit word (RFC 4303 §2.4).
	align int
	// ctBlock is what a received ciphertext must be a multiple of. It is
	// the cipher's block size, not align: the 4-byte rule binds senders,
	// and Linux accepts unaligned AEAD and NULL ciphertexts too.
	ctBlock int
	name    string

	// testIV, when set by tests, replaces the IV of every sealed packet so
	// that published vectors (whose IVs are arbitrary) can be reproduced.
	testIV []byte
}

// engine is one family of constructions (AEAD, or cipher plus MAC).
type engine interface {
	// seal encrypts and authenticates b in place. b holds the written ESP
	// header, the IV field, the plaintext with its ESP trailer, and room
	// for the ICV at the end. testIV, if non-nil, is used as the IV.
	seal(b []byte, seq uint64, esn bool, testIV []byte)
	// open verifies and decrypts b (already length-checked) in place and
	// returns the plaintext including the ESP trailer.
	open(b []byte, seq uint64, esn bool) ([]byte, error)
	// zero wipes the key material the engine holds.
	zero()
}

// New builds a transform. aead, or enc with auth, name the algorithms by
// Linux xfrm name or setkey name; icvBits 0 takes the default.
//
// AEAD keys carry their salt at the end (RFC 4106 §8.1, RFC 7634 §4).
// An empty authName makes an encryption-only SA (RFC 4303 §3.2 allows it
// but RFC 8221 advises against it); an empty or "null" encName with an
// authName makes an integrity-only SA with the NULL cipher.
func New(aeadName string, aeadKey []byte, aeadICVBits int, encName string, encKey []byte, authName string, authKey []byte, authICVBits int) (*Transform, error) {
	if aeadName != "" {
		if encName != "" || authName != "" {
			return nil, fmt.Errorf("esp: %s is an AEAD algorithm and takes no separate encryption (%q) or integrity (%q) algorithm", aeadName, encName, authName)
		}
		return newAEADTransform(aeadName, aeadKey, aeadICVBits)
	}
	if encName == "" && authName == "" {
		return nil, fmt.Errorf("esp: no algorithm: need an AEAD, or encryption and/or integrity")
	}
	if encName == "" {
		encName = "null"
	}
	return newCBCTransform(encName, encKey, authName, authKey, authICVBits)
}

func newAEADTransform(name string, key []byte, icvBits int) (*Transform, error) {
	a, icvLen, err := lookupKeyed(KindAEAD, name, icvBits, key)
	if err != nil {
		return nil, err
	}
	k := len(key) - a.SaltLen
	eng, err := newAEADEngine(a, key[:k], key[k:], icvLen)
	if err != nil {
		return nil, fmt.Errorf("esp: %s: %v", name, err)
	}
	return &Transform{
		eng:     eng,
		ivLen:   a.IVLen,
		icvLen:  icvLen,
		align:   max(a.BlockSize, 4),
		ctBlock: a.BlockSize,
		name:    fmt.Sprintf("%s/%d", a.LinuxName, icvLen*8),
	}, nil
}

func newCBCTransform(encName string, encKey []byte, authName string, authKey []byte, authICVBits int) (*Transform, error) {
	enc, _, err := lookupKeyed(KindEncryption, encName, 0, encKey)
	if err != nil {
		return nil, err
	}
	var mac *MAC
	icvLen := 0
	if authName != "" {
		if mac, err = NewMAC(authName, authKey, authICVBits); err != nil {
			return nil, err
		}
		icvLen = mac.icvLen
	} else if authICVBits != 0 {
		return nil, fmt.Errorf("esp: ICV of %d bits given without an integrity algorithm", authICVBits)
	} else if enc.newBlock == nil {
		return nil, fmt.Errorf("esp: %s encryption without integrity protects nothing (RFC 4303 §3.2)", encName)
	}
	eng, err := newCBCEngine(enc, encKey, mac)
	if err != nil {
		return nil, fmt.Errorf("esp: %s: %v", encName, err)
	}
	name := enc.LinuxName
	if mac != nil {
		name += "+" + mac.name
	}
	return &Transform{
		eng:     eng,
		ivLen:   enc.IVLen,
		icvLen:  icvLen,
		align:   max(enc.BlockSize, 4),
		ctBlock: enc.BlockSize,
		name:    name,
	}, nil
}

// String names the algorithms and ICV length, e.g. "rfc4106(gcm(aes))/128".
func (t *Transform) String() string { return t.name }

// IVLen is the length of the IV carried in every packet.
func (t *Transform) IVLen() int { return t.ivLen }

// ICVLen is the length of the ICV.
func (t *Transform) ICVLen() int { return t.icvLen }

// BlockAlign is the unit Seal pads the payload and trailer to.
func (t *Transform) BlockAlign() int { return t.align }

// MaxOverhead is the most bytes Seal adds to a payload of n bytes.
func (t *Transform) MaxOverhead() int {
	return HeaderLen + t.ivLen + t.align - 1 + TrailerLen + t.icvLen
}

// SealedLen is the exact ESP packet length for an n-byte payload.
func (t *Transform) SealedLen(n int) int {
	return HeaderLen + t.ivLen + n + t.padLen(n) + TrailerLen + t.icvLen
}

// padLen is the minimal padding that aligns payload and trailer.
func (t *Transform) padLen(n int) int {
	return (t.align - (n+TrailerLen)%t.align) % t.align
}

// Zero wipes the key material: the salt and the cipher and MAC keys the
// transform keeps, and AES-GCM's key schedule and hash key table where it
// is internal/aesgcm, and drops its cipher objects. Go's cipher.Block and
// cipher.AEAD values keep expanded key schedules that cannot be reached to
// wipe them; dropping the references lets the GC reclaim them. Seal and
// Open fail (nil, ErrZeroed) afterwards. Call it only once no other
// goroutine uses the transform.
func (t *Transform) Zero() {
	if t.eng != nil {
		t.eng.zero()
		t.eng = nil
	}
}
