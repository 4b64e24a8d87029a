package ikecrypto

import (
	"crypto/mlkem"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

// mlkemKE is an ML-KEM decapsulation key (FIPS 203), the initiator's half
// of the key exchange methods of draft-ietf-ipsecme-ikev2-mlkem: the
// initiator sends the encapsulation key, the responder the ciphertext,
// and the shared secret is the KEM's 32-byte key. They are meant as
// additional key exchanges (RFC 9370); this package provides the
// primitive only.
type mlkemKE struct {
	method uint16
	dk768  *mlkem.DecapsulationKey768
	dk1024 *mlkem.DecapsulationKey1024
}

func newMLKEM(method uint16) (*mlkemKE, error) {
	k := &mlkemKE{method: method}
	var err error
	if method == message.KE_MLKEM768 {
		k.dk768, err = mlkem.GenerateKey768()
	} else {
		k.dk1024, err = mlkem.GenerateKey1024()
	}
	if err != nil {
		return nil, err
	}
	return k, nil
}

func (k *mlkemKE) Method() uint16 { return k.method }

func (k *mlkemKE) Public() []byte {
	if k.dk768 != nil {
		return k.dk768.EncapsulationKey().Bytes()
	}
	return k.dk1024.EncapsulationKey().Bytes()
}

func (k *mlkemKE) SharedSecret(ct []byte) ([]byte, error) {
	var s []byte
	var err error
	if k.dk768 != nil {
		if len(ct) != mlkem.CiphertextSize768 {
			return nil, invalidPublic(k.method, "ciphertext of %d bytes, want %d", len(ct), mlkem.CiphertextSize768)
		}
		s, err = k.dk768.Decapsulate(ct)
	} else {
		if len(ct) != mlkem.CiphertextSize1024 {
			return nil, invalidPublic(k.method, "ciphertext of %d bytes, want %d", len(ct), mlkem.CiphertextSize1024)
		}
		s, err = k.dk1024.Decapsulate(ct)
	}
	if err != nil {
		return nil, invalidPublic(k.method, "ciphertext refused")
	}
	return s, nil
}

func (k *mlkemKE) Wipe() { k.dk768, k.dk1024 = nil, nil }

// mlkemEncapsulate is the responder's half: it checks the encapsulation
// key (FIPS 203 §7.2 modulus check, done by crypto/mlkem) and returns the
// ciphertext and the shared key.
func mlkemEncapsulate(method uint16, ek []byte) (ct, shared []byte, err error) {
	if method == message.KE_MLKEM768 {
		k, err := mlkem.NewEncapsulationKey768(ek)
		if err != nil {
			return nil, nil, invalidPublic(method, "encapsulation key of %d bytes refused", len(ek))
		}
		shared, ct = k.Encapsulate()
		return ct, shared, nil
	}
	k, err := mlkem.NewEncapsulationKey1024(ek)
	if err != nil {
		return nil, nil, invalidPublic(method, "encapsulation key of %d bytes refused", len(ek))
	}
	shared, ct = k.Encapsulate()
	return ct, shared, nil
}
