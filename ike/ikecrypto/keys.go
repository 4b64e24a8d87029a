package ikecrypto

import (
	"encoding/binary"
	"fmt"
)

// IKEKeys are the seven secrets of an IKE SA (RFC 7296 §2.14).
type IKEKeys struct {
	// D derives CHILD SA keys and the next IKE SA's SKEYSEED.
	D []byte
	// Ai and Ar key the integrity check of the Encrypted payload sent by
	// the initiator and by the responder; empty with an AEAD.
	Ai, Ar []byte
	// Ei and Er key its encryption; with an AEAD they end in the salt.
	Ei, Er []byte
	// Pi and Pr enter the AUTH payload computation (§2.15).
	Pi, Pr []byte
}

// Wipe overwrites all keys with zeros.
func (k *IKEKeys) Wipe() {
	for _, b := range [][]byte{k.D, k.Ai, k.Ar, k.Ei, k.Er, k.Pi, k.Pr} {
		clear(b)
	}
}

// SKEYSEED returns prf(Ni | Nr, g^ir) (RFC 7296 §2.14). A PRF with a fixed
// key length is keyed with the first half of its key length from each
// nonce.
func SKEYSEED(prf *PRF, ni, nr, gir []byte) ([]byte, error) {
	key, err := nonceKey(prf, ni, nr)
	if err != nil {
		return nil, err
	}
	s := prf.Sum(key, gir)
	clear(key)
	return s, nil
}

// RekeySKEYSEED returns the SKEYSEED of an IKE SA created by rekeying
// (RFC 7296 §2.18): prf(SK_d (old), g^ir (new) | Ni | Nr), with the old
// IKE SA's PRF.
func RekeySKEYSEED(oldPRF *PRF, oldSKd, gir, ni, nr []byte) []byte {
	return oldPRF.Sum(oldSKd, gir, ni, nr)
}

func nonceKey(prf *PRF, ni, nr []byte) ([]byte, error) {
	if !prf.FixedKey {
		return append(append([]byte(nil), ni...), nr...), nil
	}
	half := prf.KeyLen / 2
	if len(ni) < half || len(nr) < half {
		return nil, fmt.Errorf("ikecrypto: %s needs nonces of at least %d bytes", prf.Name, half)
	}
	return append(append([]byte(nil), ni[:half]...), nr[:half]...), nil
}

// DeriveIKEKeys returns {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi |
// SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) (RFC 7296 §2.14). encLen
// and integLen are the key lengths of the negotiated encryption (with the
// salt, for an AEAD) and integrity transforms (0 for an AEAD).
func DeriveIKEKeys(prf *PRF, skeyseed, ni, nr []byte, spii, spir uint64, encLen, integLen int) (*IKEKeys, error) {
	seed := make([]byte, 0, len(ni)+len(nr)+16)
	seed = append(append(seed, ni...), nr...)
	seed = binary.BigEndian.AppendUint64(seed, spii)
	seed = binary.BigEndian.AppendUint64(seed, spir)
	n := 3*prf.KeyLen + 2*integLen + 2*encLen
	km, err := prf.Plus(skeyseed, seed, n)
	if err != nil {
		return nil, err
	}
	k := &IKEKeys{}
	for _, f := range []struct {
		dst *[]byte
		n   int
	}{{&k.D, prf.KeyLen}, {&k.Ai, integLen}, {&k.Ar, integLen}, {&k.Ei, encLen}, {&k.Er, encLen}, {&k.Pi, prf.KeyLen}, {&k.Pr, prf.KeyLen}} {
		*f.dst = km[:f.n:f.n]
		km = km[f.n:]
	}
	return k, nil
}

// ChildKeys are the keys of a CHILD SA pair taken from KEYMAT (RFC 7296
// §2.17): all keys for the initiator-to-responder SA come first, and in
// each direction the encryption key before the integrity key.
type ChildKeys struct {
	// EncI and IntegI key the SA carrying traffic from initiator to
	// responder; EncR and IntegR the reverse one. An AEAD's key ends in
	// its salt and has no integrity key.
	EncI, IntegI, EncR, IntegR []byte
}

// Wipe overwrites all keys with zeros.
func (k *ChildKeys) Wipe() {
	for _, b := range [][]byte{k.EncI, k.IntegI, k.EncR, k.IntegR} {
		clear(b)
	}
}

// DeriveChildKeys returns the CHILD SA keys from KEYMAT = prf+(SK_d, Ni |
// Nr), or with PFS prf+(SK_d, g^ir (new) | Ni | Nr) when gir is not nil
// (RFC 7296 §2.17). Ni and Nr are the nonces of the exchange that creates
// the CHILD SA: IKE_SA_INIT's for the first one.
func DeriveChildKeys(prf *PRF, skd, gir, ni, nr []byte, encLen, integLen int) (*ChildKeys, error) {
	seed := make([]byte, 0, len(gir)+len(ni)+len(nr))
	seed = append(append(append(seed, gir...), ni...), nr...)
	km, err := prf.Plus(skd, seed, 2*(encLen+integLen))
	clear(seed)
	if err != nil {
		return nil, err
	}
	k := &ChildKeys{}
	for _, f := range []struct {
		dst *[]byte
		n   int
	}{{&k.EncI, encLen}, {&k.IntegI, integLen}, {&k.EncR, encLen}, {&k.IntegR, integLen}} {
		*f.dst = km[:f.n:f.n]
		km = km[f.n:]
	}
	return k, nil
}
