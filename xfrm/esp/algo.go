package esp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/ipsecstack/ipsecstack/internal/aesgcm"
)

// Kind says which slot of an SA an algorithm fills.
type Kind uint8

// Algorithm kinds.
const (
	// KindAEAD is a combined-mode cipher: confidentiality and integrity in
	// one transform (PF_KEY lists them with the encryption algorithms).
	KindAEAD Kind = 1 + iota
	// KindEncryption is a cipher used together with a KindIntegrity MAC.
	KindEncryption
	// KindIntegrity is a MAC, for ESP's separate integrity (and, later, AH).
	KindIntegrity
)

// String names the kind as error messages do.
func (k Kind) String() string {
	switch k {
	case KindAEAD:
		return "aead"
	case KindEncryption:
		return "encryption"
	case KindIntegrity:
		return "integrity"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// AlgInfo describes one algorithm of the table, in the vocabulary of the
// front ends: Linux xfrm names, setkey names, IKEv2 transform IDs and PF_KEY
// numbers. The same cipher with different ICV lengths (AES-GCM 8/12/16) has
// one entry per ICV length, because setkey, PF_KEY and IKEv2 all number them
// separately while Linux names them once and takes the ICV length apart.
type AlgInfo struct {
	Kind Kind
	// LinuxName is the xfrm name ("rfc4106(gcm(aes))", "hmac(sha256)").
	LinuxName string
	// SetkeyNames are the KAME/ipsec-tools names, preferred name first.
	SetkeyNames []string
	// Aliases are further accepted names (Linux's compat names).
	Aliases []string
	// IKEv2ID is the IKEv2 transform ID (RFC 7296 §3.3.2, IANA): transform
	// type 1 (ENCR) for AEAD and encryption, type 3 (INTEG) for integrity.
	IKEv2ID uint16
	// SADB is the PF_KEY v2 algorithm number from Linux's pfkeyv2.h
	// (sadb_sa_encrypt or sadb_sa_auth), or 0 where PF_KEY has none.
	SADB uint8
	// KeySizes lists the accepted key lengths in bytes, without the salt.
	KeySizes []int
	// SaltLen is the length of the salt appended to the key (AEAD).
	SaltLen int
	// ICVLen is the default ICV length in bytes (0 for encryption).
	ICVLen int
	// IVLen is the length of the IV carried in each packet.
	IVLen int
	// BlockSize is the cipher block size that the ciphertext must be a
	// multiple of (1 for stream and counter modes); ESP aligns to at least 4.
	BlockSize int
}

// algorithm is a table entry: the public description plus constructors.
type algorithm struct {
	AlgInfo
	// linuxDefault marks the entry a Linux name selects when no ICV length
	// is given (several GCM entries share "rfc4106(gcm(aes))").
	linuxDefault bool
	// icvBits lists further ICV truncations accepted for an integrity
	// algorithm (Linux's auth-trunc); the default is always accepted.
	icvBits []int
	// Constructors; exactly one is set, per Kind.
	newAEAD  func(key []byte, icvLen int) (cipher.AEAD, error)
	newBlock func(key []byte) (cipher.Block, error) // nil newBlock+KindEncryption = NULL
	newMAC   func(key []byte) (hash.Hash, error)
	// ctr marks a counter-mode cipher (RFC 3686): the key carries a
	// 4-byte nonce, the IV is the 8-byte sequence number, no padding to
	// the block size.
	ctr bool
	// gmac marks an AEAD used for integrity only (RFC 4543): everything
	// is authenticated as AAD, nothing is encrypted.
	gmac bool
}

// The table. To add an algorithm add an entry here and, if its
// construction differs from the existing engines (aead.go, cbc.go), an
// engine for it. SADB numbers are from Linux's include/uapi/linux/pfkeyv2.h,
// IKEv2 IDs from the IANA registry (RFC 7296 §3.3.2 and updates).
var algorithms = []*algorithm{
	// RFC 4106 AES-GCM. Three entries because setkey, PF_KEY and IKEv2
	// number the ICV lengths separately.
	// ENCR_AES_GCM_16/12/8, SADB_X_EALG_AES_GCM_ICV16/12/8.
	aesAEADEntry("rfc4106(gcm(aes))", "aes-gcm-16", 20, 20, 4, 16, true, newGCM),
	aesAEADEntry("rfc4106(gcm(aes))", "aes-gcm-12", 19, 19, 4, 12, false, newGCM),
	aesAEADEntry("rfc4106(gcm(aes))", "aes-gcm-8", 18, 18, 4, 8, false, newGCM),
	// RFC 4309 AES-CCM: key + 3-byte salt, 8-byte IV, ICV 8/12/16.
	// ENCR_AES_CCM_16/12/8, SADB_X_EALG_AES_CCM_ICV16/12/8.
	aesAEADEntry("rfc4309(ccm(aes))", "aes-ccm-16", 16, 16, 3, 16, true, newCCMAES),
	aesAEADEntry("rfc4309(ccm(aes))", "aes-ccm-12", 15, 15, 3, 12, false, newCCMAES),
	aesAEADEntry("rfc4309(ccm(aes))", "aes-ccm-8", 14, 14, 3, 8, false, newCCMAES),
	{
		// RFC 4543 AES-GMAC: ESP integrity only, with GCM's tag over
		// SPI || seq || IV || payload as AAD.
		AlgInfo: AlgInfo{
			Kind:        KindAEAD,
			LinuxName:   "rfc4543(gcm(aes))",
			SetkeyNames: []string{"null-aes-gmac", "aes-gmac"},
			IKEv2ID:     21, // ENCR_NULL_AUTH_AES_GMAC
			SADB:        23, // SADB_X_EALG_NULL_AES_GMAC
			KeySizes:    []int{16, 24, 32},
			SaltLen:     4,
			ICVLen:      16,
			IVLen:       8,
			BlockSize:   1,
		},
		linuxDefault: true,
		gmac:         true,
		newAEAD:      newGCM,
	},
	{
		// RFC 7634. Linux has no PF_KEY number for it (pfkey_supported = 0
		// in net/xfrm/xfrm_algo.c); the BSDs assign different numbers.
		AlgInfo: AlgInfo{
			Kind:        KindAEAD,
			LinuxName:   "rfc7539esp(chacha20,poly1305)",
			SetkeyNames: []string{"chacha20-poly1305"},
			IKEv2ID:     28, // ENCR_CHACHA20_POLY1305
			SADB:        0,
			KeySizes:    []int{chacha20poly1305.KeySize},
			SaltLen:     4,
			ICVLen:      chacha20poly1305.Overhead,
			IVLen:       8,
			BlockSize:   1,
		},
		linuxDefault: true,
		newAEAD: func(key []byte, _ int) (cipher.AEAD, error) {
			return chacha20poly1305.New(key)
		},
	},
	{
		// RFC 3602.
		AlgInfo: AlgInfo{
			Kind:        KindEncryption,
			LinuxName:   "cbc(aes)",
			SetkeyNames: []string{"aes-cbc", "rijndael-cbc"},
			Aliases:     []string{"aes"},
			IKEv2ID:     12, // ENCR_AES_CBC
			SADB:        12, // SADB_X_EALG_AESCBC
			KeySizes:    []int{16, 24, 32},
			IVLen:       aes.BlockSize,
			BlockSize:   aes.BlockSize,
		},
		linuxDefault: true,
		newBlock:     aes.NewCipher,
	},
	{
		// RFC 3686: key + 4-byte nonce; IV = sequence number.
		AlgInfo: AlgInfo{
			Kind:        KindEncryption,
			LinuxName:   "rfc3686(ctr(aes))",
			SetkeyNames: []string{"aes-ctr"},
			IKEv2ID:     13, // ENCR_AES_CTR
			SADB:        13, // SADB_X_EALG_AESCTR
			KeySizes:    []int{16, 24, 32},
			SaltLen:     4,
			IVLen:       8,
			BlockSize:   1,
		},
		linuxDefault: true,
		newBlock:     aes.NewCipher,
		ctr:          true,
	},
	{
		// RFC 2451 3DES-CBC (deprecated by RFC 8221; for old peers).
		AlgInfo: AlgInfo{
			Kind:        KindEncryption,
			LinuxName:   "cbc(des3_ede)",
			SetkeyNames: []string{"3des-cbc"},
			Aliases:     []string{"des3_ede"},
			IKEv2ID:     3, // ENCR_3DES
			SADB:        3, // SADB_EALG_3DESCBC
			KeySizes:    []int{24},
			IVLen:       des.BlockSize,
			BlockSize:   des.BlockSize,
		},
		linuxDefault: true,
		newBlock:     des.NewTripleDESCipher,
	},
	{
		// RFC 2405 DES-CBC (broken: MUST NOT per RFC 8221; for old peers).
		AlgInfo: AlgInfo{
			Kind:        KindEncryption,
			LinuxName:   "cbc(des)",
			SetkeyNames: []string{"des-cbc"},
			Aliases:     []string{"des"},
			IKEv2ID:     2, // ENCR_DES
			SADB:        2, // SADB_EALG_DESCBC
			KeySizes:    []int{8},
			IVLen:       des.BlockSize,
			BlockSize:   des.BlockSize,
		},
		linuxDefault: true,
		newBlock:     des.NewCipher,
	},
	{
		// RFC 2410: the identity cipher, for integrity-only ESP.
		AlgInfo: AlgInfo{
			Kind:        KindEncryption,
			LinuxName:   "ecb(cipher_null)",
			SetkeyNames: []string{"null"},
			Aliases:     []string{"cipher_null"},
			IKEv2ID:     11, // ENCR_NULL
			SADB:        11, // SADB_EALG_NULL
			KeySizes:    []int{0},
			IVLen:       0,
			BlockSize:   1,
		},
		linuxDefault: true,
	},
	hmacEntry("hmac(sha1)", "hmac-sha1", "sha1", 2, 3, sha1.Size, 12, sha1.New),                  // RFC 2404; AUTH_HMAC_SHA1_96, SADB_AALG_SHA1HMAC
	hmacEntry("hmac(sha256)", "hmac-sha256", "sha256", 12, 5, sha256.Size, 16, sha256.New),       // RFC 4868; AUTH_HMAC_SHA2_256_128, SADB_X_AALG_SHA2_256HMAC
	hmacEntry("hmac(sha384)", "hmac-sha384", "sha384", 13, 6, sha512.Size384, 24, sha512.New384), // AUTH_HMAC_SHA2_384_192, SADB_X_AALG_SHA2_384HMAC
	hmacEntry("hmac(sha512)", "hmac-sha512", "sha512", 14, 7, sha512.Size, 32, sha512.New),       // AUTH_HMAC_SHA2_512_256, SADB_X_AALG_SHA2_512HMAC
	hmacEntry("hmac(md5)", "hmac-md5", "md5", 1, 2, md5.Size, 12, md5.New),                       // RFC 2403; AUTH_HMAC_MD5_96, SADB_AALG_MD5HMAC
	// RFC 3566 AES-XCBC-MAC-96: AUTH_AES_XCBC_96, SADB_X_AALG_AES_XCBC_MAC.
	aesMACEntry("xcbc(aes)", "aes-xcbc-mac", "aes_xcbc_mac", 5, 9, newXCBC),
	// RFC 4494 AES-CMAC-96: AUTH_AES_CMAC_96. Linux has no PF_KEY number
	// for cmac(aes) (pfkey_supported = 0 in net/xfrm/xfrm_algo.c).
	aesMACEntry("cmac(aes)", "aes-cmac", "aes_cmac", 8, 0, newCMAC),
}

func aesMACEntry(linux, setkey, compat string, ikev2 uint16, sadb uint8, mk func([]byte) (hash.Hash, error)) *algorithm {
	return &algorithm{
		AlgInfo: AlgInfo{
			Kind:        KindIntegrity,
			LinuxName:   linux,
			SetkeyNames: []string{setkey},
			Aliases:     []string{compat},
			IKEv2ID:     ikev2,
			SADB:        sadb,
			KeySizes:    []int{16},
			ICVLen:      12,
		},
		linuxDefault: true,
		icvBits:      []int{128},
		newMAC:       mk,
	}
}

// aesAEADEntry is one ICV length of an RFC 4106/4309 AES AEAD: AES-128/
// 192/256 key + salt, 8-byte IV, no block alignment.
func aesAEADEntry(linux, setkey string, ikev2 uint16, sadb uint8, saltLen, icvLen int, def bool, mk func([]byte, int) (cipher.AEAD, error)) *algorithm {
	return &algorithm{
		AlgInfo: AlgInfo{
			Kind:        KindAEAD,
			LinuxName:   linux,
			SetkeyNames: []string{setkey},
			IKEv2ID:     ikev2,
			SADB:        sadb,
			KeySizes:    []int{16, 24, 32},
			SaltLen:     saltLen,
			ICVLen:      icvLen,
			IVLen:       8,
			BlockSize:   1,
		},
		linuxDefault: def,
		newAEAD:      mk,
	}
}

// newCCMAES builds RFC 4309 AES-CCM: 11-byte nonce (salt || IV).
func newCCMAES(key []byte, icvLen int) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return newCCM(b, 11, icvLen)
}

// useVAESGCM selects internal/aesgcm; tests clear it to run Go's GCM.
var useVAESGCM = aesgcm.Supported()

// newGCM builds AES-GCM: the VAES/AVX-512 one where the CPU has it
// (internal/aesgcm, about twice Go's speed and any ICV from 8 bytes), else
// Go's. Go's GCM refuses tags shorter than 12 bytes, so there an 8-byte ICV
// runs a full-tag GCM and truncates (see aead.go): a truncated GCM tag is
// by definition the prefix of the full one (SP 800-38D §5.2.1.2).
func newGCM(key []byte, icvLen int) (cipher.AEAD, error) {
	if useVAESGCM {
		return aesgcm.New(key, icvLen)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if icvLen < 12 {
		icvLen = 16
	}
	return cipher.NewGCMWithTagSize(b, icvLen)
}

func hmacEntry(linux, setkey, compat string, ikev2 uint16, sadb uint8, keyLen, icvLen int, h func() hash.Hash) *algorithm {
	return &algorithm{
		AlgInfo: AlgInfo{
			Kind:        KindIntegrity,
			LinuxName:   linux,
			SetkeyNames: []string{setkey},
			Aliases:     []string{compat},
			IKEv2ID:     ikev2,
			SADB:        sadb,
			KeySizes:    []int{keyLen},
			ICVLen:      icvLen,
		},
		linuxDefault: true,
		// Linux lets auth-trunc pick any length; we accept whole 32-bit
		// words from 96 bits up to the full digest, which covers the
		// "sha256_96" interoperability setting of older Linux kernels.
		icvBits: wordsUpTo(96, h().Size()*8),
		newMAC: func(key []byte) (hash.Hash, error) {
			return hmac.New(h, key), nil
		},
	}
}

func wordsUpTo(lo, hi int) []int {
	var r []int
	for b := lo; b <= hi; b += 32 {
		r = append(r, b)
	}
	return r
}

// Algorithms lists the algorithm table (for PF_KEY SADB_REGISTER's
// SUPPORTED extensions, `ipsecstack setkey` help, and IKE proposals).
func Algorithms() []AlgInfo {
	r := make([]AlgInfo, len(algorithms))
	for i, a := range algorithms {
		r[i] = a.AlgInfo
		r[i].SetkeyNames = append([]string(nil), a.SetkeyNames...)
		r[i].Aliases = append([]string(nil), a.Aliases...)
		r[i].KeySizes = append([]int(nil), a.KeySizes...)
	}
	return r
}

// Lookup finds an algorithm by Linux, setkey or alias name, for the given
// kind and ICV length in bits (0 takes the default). It reports why it
// failed in the same words New does.
func Lookup(kind Kind, name string, icvBits int) (AlgInfo, error) {
	a, icvLen, err := lookup(kind, name, icvBits)
	if err != nil {
		return AlgInfo{}, err
	}
	info := a.AlgInfo
	info.ICVLen = icvLen
	return info, nil
}

// lookup resolves a name to a table entry and the ICV length in bytes.
func lookup(kind Kind, name string, icvBits int) (*algorithm, int, error) {
	lname := strings.ToLower(strings.TrimSpace(name))
	var byLinux []*algorithm
	for _, a := range algorithms {
		if a.Kind != kind {
			continue
		}
		if a.LinuxName == lname || contains(a.Aliases, lname) {
			byLinux = append(byLinux, a)
			continue
		}
		if contains(a.SetkeyNames, lname) {
			// A setkey name fixes the ICV length.
			if icvBits != 0 && icvBits != a.ICVLen*8 && !containsInt(a.icvBits, icvBits) {
				return nil, 0, fmt.Errorf("esp: %s: ICV is %d bits, want %s", name, icvBits, bitsList(a))
			}
			return a, icvLenFor(a, icvBits), nil
		}
	}
	if len(byLinux) == 0 {
		return nil, 0, fmt.Errorf("esp: unknown %s algorithm %q", kind, name)
	}
	if icvBits == 0 {
		for _, a := range byLinux {
			if a.linuxDefault {
				return a, a.ICVLen, nil
			}
		}
		return byLinux[0], byLinux[0].ICVLen, nil
	}
	var want []int
	for _, a := range byLinux {
		if icvBits == a.ICVLen*8 || containsInt(a.icvBits, icvBits) {
			return a, icvLenFor(a, icvBits), nil
		}
		want = append(want, a.ICVLen*8)
		want = append(want, a.icvBits...)
	}
	if kind == KindEncryption {
		return nil, 0, fmt.Errorf("esp: %s: an encryption algorithm has no ICV (got %d bits)", name, icvBits)
	}
	return nil, 0, fmt.Errorf("esp: %s: ICV is %d bits, want %s", name, icvBits, orList(uniqSorted(want)))
}

func icvLenFor(a *algorithm, icvBits int) int {
	if icvBits == 0 {
		return a.ICVLen
	}
	return icvBits / 8
}

func bitsList(a *algorithm) string {
	return orList(uniqSorted(append([]int{a.ICVLen * 8}, a.icvBits...)))
}

// lookupKeyed is lookup followed by keyCheck of key.
func lookupKeyed(kind Kind, name string, icvBits int, key []byte) (*algorithm, int, error) {
	a, icvLen, err := lookup(kind, name, icvBits)
	if err != nil {
		return nil, 0, err
	}
	if err := keyCheck(a, name, key); err != nil {
		return nil, 0, err
	}
	return a, icvLen, nil
}

// keyCheck validates a key (with salt) against the entry's sizes.
func keyCheck(a *algorithm, name string, key []byte) error {
	for _, n := range a.KeySizes {
		if len(key) == n+a.SaltLen {
			return nil
		}
	}
	want := make([]int, len(a.KeySizes))
	for i, n := range a.KeySizes {
		want[i] = n + a.SaltLen
	}
	extra := ""
	if a.SaltLen > 0 {
		extra = fmt.Sprintf(" (key + %d-byte salt)", a.SaltLen)
	}
	return fmt.Errorf("esp: %s: key is %d bytes, want %s%s", name, len(key), orList(want), extra)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func containsInt(list []int, n int) bool {
	for _, x := range list {
		if x == n {
			return true
		}
	}
	return false
}

func uniqSorted(in []int) []int {
	var out []int
	for _, v := range in {
		i := 0
		for i < len(out) && out[i] < v {
			i++
		}
		if i < len(out) && out[i] == v {
			continue
		}
		out = append(out, 0)
		copy(out[i+1:], out[i:])
		out[i] = v
	}
	return out
}

// orList formats 20, 28, 36 as "20, 28 or 36".
func orList(v []int) string {
	var sb strings.Builder
	for i, n := range v {
		switch {
		case i == 0:
		case i == len(v)-1:
			sb.WriteString(" or ")
		default:
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%d", n)
	}
	return sb.String()
}
