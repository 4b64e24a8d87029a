package message

import "strconv"

// PayloadType is an IKEv2 payload type, the value of a Next Payload field
// (RFC 7296 §3.2, IANA "IKEv2 Payload Types").
type PayloadType uint8

// Payload types.
const (
	NoNextPayload   PayloadType = 0
	PayloadSA       PayloadType = 33 // Security Association
	PayloadKE       PayloadType = 34 // Key Exchange
	PayloadIDi      PayloadType = 35 // Identification - Initiator
	PayloadIDr      PayloadType = 36 // Identification - Responder
	PayloadCERT     PayloadType = 37 // Certificate
	PayloadCERTREQ  PayloadType = 38 // Certificate Request
	PayloadAUTH     PayloadType = 39 // Authentication
	PayloadNonce    PayloadType = 40 // Nonce (Ni, Nr)
	PayloadNotify   PayloadType = 41 // Notify (N)
	PayloadDelete   PayloadType = 42 // Delete (D)
	PayloadVendorID PayloadType = 43 // Vendor ID (V)
	PayloadTSi      PayloadType = 44 // Traffic Selector - Initiator
	PayloadTSr      PayloadType = 45 // Traffic Selector - Responder
	PayloadSK       PayloadType = 46 // Encrypted and Authenticated
	PayloadCP       PayloadType = 47 // Configuration
	PayloadEAP      PayloadType = 48 // Extensible Authentication
	PayloadGSPM     PayloadType = 49 // Generic Secure Password Methods (RFC 6467)
	PayloadSKF      PayloadType = 53 // Encrypted and Authenticated Fragment (RFC 7383)
)

var payloadNames = map[PayloadType]string{
	NoNextPayload: "none", PayloadSA: "SA", PayloadKE: "KE", PayloadIDi: "IDi",
	PayloadIDr: "IDr", PayloadCERT: "CERT", PayloadCERTREQ: "CERTREQ",
	PayloadAUTH: "AUTH", PayloadNonce: "Nonce", PayloadNotify: "Notify",
	PayloadDelete: "Delete", PayloadVendorID: "Vendor ID", PayloadTSi: "TSi",
	PayloadTSr: "TSr", PayloadSK: "SK", PayloadCP: "CP", PayloadEAP: "EAP",
	PayloadGSPM: "GSPM", PayloadSKF: "SKF",
}

// String returns the RFC's short name, or the number.
func (t PayloadType) String() string {
	if s, ok := payloadNames[t]; ok {
		return s
	}
	return "payload type " + strconv.Itoa(int(t))
}

// ExchangeType is the IKE header's Exchange Type (RFC 7296 §3.1).
type ExchangeType uint8

// Exchange types.
const (
	IKE_SA_INIT      ExchangeType = 34
	IKE_AUTH         ExchangeType = 35
	CREATE_CHILD_SA  ExchangeType = 36
	INFORMATIONAL    ExchangeType = 37
	IKE_INTERMEDIATE ExchangeType = 43 // RFC 9242
)

var exchangeNames = map[ExchangeType]string{
	IKE_SA_INIT: "IKE_SA_INIT", IKE_AUTH: "IKE_AUTH", CREATE_CHILD_SA: "CREATE_CHILD_SA",
	INFORMATIONAL: "INFORMATIONAL", IKE_INTERMEDIATE: "IKE_INTERMEDIATE",
}

// String returns the exchange's name, or the number.
func (t ExchangeType) String() string {
	if s, ok := exchangeNames[t]; ok {
		return s
	}
	return "exchange type " + strconv.Itoa(int(t))
}

// Flags are the IKE header flags (RFC 7296 §3.1).
type Flags uint8

// Header flags. The other bits are reserved: sent as zero, ignored (and
// preserved) on receipt.
const (
	FlagInitiator Flags = 0x08 // I: sent by the original initiator of the IKE SA
	FlagVersion   Flags = 0x10 // V: sender can speak a higher major version
	FlagResponse  Flags = 0x20 // R: this message is a response
)

// ProtocolID names the protocol of a proposal, notification or delete
// (RFC 7296 §3.3.1).
type ProtocolID uint8

// Protocol IDs.
const (
	ProtoNone ProtocolID = 0 // in a Notify not about an SA
	ProtoIKE  ProtocolID = 1
	ProtoAH   ProtocolID = 2
	ProtoESP  ProtocolID = 3
)

// TransformType is the type of a transform (RFC 7296 §3.3.2).
type TransformType uint8

// Transform types.
const (
	TransformENCR   TransformType = 1 // Encryption Algorithm
	TransformPRF    TransformType = 2 // Pseudorandom Function
	TransformINTEG  TransformType = 3 // Integrity Algorithm
	TransformKE     TransformType = 4 // Key Exchange Method (formerly D-H group)
	TransformESN    TransformType = 5 // Extended Sequence Numbers
	TransformADDKE1 TransformType = 6 // Additional Key Exchange 1 (RFC 9370); 7..12 are ADDKE2..7
)

// Encryption transform IDs (IANA "Transform Type 1").
const (
	ENCR_3DES               uint16 = 3
	ENCR_NULL               uint16 = 11
	ENCR_AES_CBC            uint16 = 12
	ENCR_AES_CTR            uint16 = 13
	ENCR_AES_CCM_8          uint16 = 14
	ENCR_AES_CCM_12         uint16 = 15
	ENCR_AES_CCM_16         uint16 = 16
	ENCR_AES_GCM_8          uint16 = 18
	ENCR_AES_GCM_12         uint16 = 19
	ENCR_AES_GCM_16         uint16 = 20
	ENCR_NULL_AUTH_AES_GMAC uint16 = 21
	ENCR_CHACHA20_POLY1305  uint16 = 28
)

// PRF transform IDs (IANA "Transform Type 2").
const (
	PRF_HMAC_MD5      uint16 = 1
	PRF_HMAC_SHA1     uint16 = 2
	PRF_AES128_XCBC   uint16 = 4
	PRF_HMAC_SHA2_256 uint16 = 5
	PRF_HMAC_SHA2_384 uint16 = 6
	PRF_HMAC_SHA2_512 uint16 = 7
	PRF_AES128_CMAC   uint16 = 8
)

// Integrity transform IDs (IANA "Transform Type 3").
const (
	AUTH_NONE              uint16 = 0
	AUTH_HMAC_SHA1_96      uint16 = 2
	AUTH_AES_XCBC_96       uint16 = 5
	AUTH_AES_CMAC_96       uint16 = 8
	AUTH_HMAC_SHA2_256_128 uint16 = 12
	AUTH_HMAC_SHA2_384_192 uint16 = 13
	AUTH_HMAC_SHA2_512_256 uint16 = 14
)

// Key exchange method IDs (IANA "Transform Type 4").
const (
	KE_NONE       uint16 = 0
	KE_MODP2048   uint16 = 14
	KE_MODP3072   uint16 = 15
	KE_MODP4096   uint16 = 16
	KE_ECP256     uint16 = 19
	KE_ECP384     uint16 = 20
	KE_ECP521     uint16 = 21
	KE_CURVE25519 uint16 = 31
	KE_CURVE448   uint16 = 32
	KE_MLKEM512   uint16 = 35
	KE_MLKEM768   uint16 = 36
	KE_MLKEM1024  uint16 = 37
)

// Extended sequence number transform IDs (IANA "Transform Type 5").
const (
	ESN_NO  uint16 = 0
	ESN_YES uint16 = 1
)

// AttributeType is a transform attribute type, without the AF bit
// (RFC 7296 §3.3.5).
type AttributeType uint16

// AttrKeyLength is the Key Length attribute, in bits; always TV format.
const AttrKeyLength AttributeType = 14

// IDType is the type of an Identification payload (RFC 7296 §3.5).
type IDType uint8

// Identification types.
const (
	ID_IPV4_ADDR   IDType = 1
	ID_FQDN        IDType = 2
	ID_RFC822_ADDR IDType = 3
	ID_IPV6_ADDR   IDType = 5
	ID_DER_ASN1_DN IDType = 9
	ID_DER_ASN1_GN IDType = 10
	ID_KEY_ID      IDType = 11
	ID_FC_NAME     IDType = 12 // RFC 4595
	ID_NULL        IDType = 13 // RFC 7619
)

// AuthMethod is the method of an AUTH payload (RFC 7296 §3.8).
type AuthMethod uint8

// Authentication methods.
const (
	AuthRSASignature     AuthMethod = 1
	AuthSharedKeyMIC     AuthMethod = 2
	AuthDSSSignature     AuthMethod = 3
	AuthECDSA256         AuthMethod = 9  // RFC 4754
	AuthECDSA384         AuthMethod = 10 // RFC 4754
	AuthECDSA521         AuthMethod = 11 // RFC 4754
	AuthNULL             AuthMethod = 13 // RFC 7619
	AuthDigitalSignature AuthMethod = 14 // RFC 7427
)

// CertEncoding is the encoding of a CERT or CERTREQ payload (RFC 7296
// §3.6).
type CertEncoding uint8

// Certificate encodings.
const (
	CertPKCS7         CertEncoding = 1
	CertX509Signature CertEncoding = 4
	CertCRL           CertEncoding = 7
	CertHashURLX509   CertEncoding = 12
	CertHashURLBundle CertEncoding = 13
	CertOCSPContent   CertEncoding = 14 // RFC 4806
	CertRawPublicKey  CertEncoding = 15 // RFC 7670
)

// TSType is the type of a traffic selector (RFC 7296 §3.13.1).
type TSType uint8

// Traffic selector types.
const (
	TS_IPV4_ADDR_RANGE TSType = 7
	TS_IPV6_ADDR_RANGE TSType = 8
)
