// Package pfkey implements PF_KEY v2 (RFC 2367) with the KAME/Linux
// extensions: a strict codec byte-compatible with Linux's
// include/uapi/linux/pfkeyv2.h and ipsec.h, and a server that answers
// PF_KEY messages from key managers and setkey against an xfrm.Engine,
// following the validation and broadcast rules of Linux net/key/af_key.c.
//
// Wire format: every length field counts 64-bit words and lives in host
// byte order (as Linux, which never converts them); SPIs and ports are in
// network byte order; every extension is 8-byte aligned. The
// sadb_x_ipsecrequest length is the one exception: it counts bytes.
package pfkey

// Version is PF_KEY_V2, the first byte of every message.
const Version = 2

// Message types (sadb_msg_type).
const (
	MsgReserved    = 0
	MsgGetSPI      = 1
	MsgUpdate      = 2
	MsgAdd         = 3
	MsgDelete      = 4
	MsgGet         = 5
	MsgAcquire     = 6
	MsgRegister    = 7
	MsgExpire      = 8
	MsgFlush       = 9
	MsgDump        = 10
	MsgXPromisc    = 11
	MsgXPChange    = 12
	MsgXSPDUpdate  = 13
	MsgXSPDAdd     = 14
	MsgXSPDDelete  = 15
	MsgXSPDGet     = 16
	MsgXSPDAcquire = 17
	MsgXSPDDump    = 18
	MsgXSPDFlush   = 19
	MsgXSPDSetIdx  = 20
	MsgXSPDExpire  = 21
	MsgXSPDDelete2 = 22
	MsgXNATTNewMap = 23
	MsgXMigrate    = 24
	MsgMax         = 24
)

var msgNames = [...]string{"RESERVED", "GETSPI", "UPDATE", "ADD", "DELETE", "GET", "ACQUIRE", "REGISTER",
	"EXPIRE", "FLUSH", "DUMP", "X_PROMISC", "X_PCHANGE", "X_SPDUPDATE", "X_SPDADD", "X_SPDDELETE",
	"X_SPDGET", "X_SPDACQUIRE", "X_SPDDUMP", "X_SPDFLUSH", "X_SPDSETIDX", "X_SPDEXPIRE", "X_SPDDELETE2",
	"X_NAT_T_NEW_MAPPING", "X_MIGRATE"}

// MsgName returns the SADB_ name of a message type without the prefix.
func MsgName(t uint8) string {
	if int(t) < len(msgNames) {
		return msgNames[t]
	}
	return "UNKNOWN"
}

// Extension types (sadb_ext_type).
const (
	ExtReserved         = 0
	ExtSA               = 1
	ExtLifetimeCurrent  = 2
	ExtLifetimeHard     = 3
	ExtLifetimeSoft     = 4
	ExtAddressSrc       = 5
	ExtAddressDst       = 6
	ExtAddressProxy     = 7
	ExtKeyAuth          = 8
	ExtKeyEncrypt       = 9
	ExtIdentitySrc      = 10
	ExtIdentityDst      = 11
	ExtSensitivity      = 12
	ExtProposal         = 13
	ExtSupportedAuth    = 14
	ExtSupportedEncrypt = 15
	ExtSPIRange         = 16
	ExtXKMPrivate       = 17
	ExtXPolicy          = 18
	ExtXSA2             = 19
	ExtXNATTType        = 20
	ExtXNATTSport       = 21
	ExtXNATTDport       = 22
	ExtXNATTOA          = 23
	ExtXSecCtx          = 24
	ExtXKMAddress       = 25
	ExtXFilter          = 26
	ExtMax              = 26
)

// SA types (sadb_msg_satype).
const (
	SATypeUnspec = 0
	SATypeAH     = 2
	SATypeESP    = 3
	SATypeRSVP   = 5
	SATypeOSPFv2 = 6
	SATypeRIPv2  = 7
	SATypeMIP    = 8
	SATypeIPComp = 9
	SATypeMax    = 9
)

// SA states (sadb_sa_state).
const (
	SAStateLarval = 0
	SAStateMature = 1
	SAStateDying  = 2
	SAStateDead   = 3
)

// SA flags (sadb_sa_flags).
const (
	SAFlagPFS        = 1
	SAFlagNoPMTUDisc = 0x20000000
	SAFlagDecapDSCP  = 0x40000000
	SAFlagNoECN      = 0x80000000
)

// Authentication algorithms (sadb_sa_auth).
const (
	AAlgNone       = 0
	AAlgMD5HMAC    = 2
	AAlgSHA1HMAC   = 3
	AAlgSHA256HMAC = 5
	AAlgSHA384HMAC = 6
	AAlgSHA512HMAC = 7
	AAlgRIPEMD160  = 8
	AAlgAESXCBC    = 9
	AAlgNull       = 251
)

// Encryption algorithms (sadb_sa_encrypt).
const (
	EAlgNone        = 0
	EAlgDESCBC      = 2
	EAlg3DESCBC     = 3
	EAlgCASTCBC     = 6
	EAlgBlowfishCBC = 7
	EAlgNull        = 11
	EAlgAESCBC      = 12
	EAlgAESCTR      = 13
	EAlgAESCCM8     = 14
	EAlgAESCCM12    = 15
	EAlgAESCCM16    = 16
	EAlgAESGCM8     = 18
	EAlgAESGCM12    = 19
	EAlgAESGCM16    = 20
	EAlgCamelliaCBC = 22
	EAlgNullAESGMAC = 23
	// EAlgPrivateChaCha20Poly1305 is ipsecstack's number for RFC 7634
	// ChaCha20-Poly1305, from the private range 249-255 that RFC 2407
	// reserves: Linux gives it no PF_KEY number (pfkey_supported = 0).
	EAlgPrivateChaCha20Poly1305 = 249
)

// Compression algorithms.
const (
	CAlgNone    = 0
	CAlgOUI     = 1
	CAlgDeflate = 2
	CAlgLZS     = 3
	CAlgLZJH    = 4
)

// Identity types.
const (
	IdentReserved = 0
	IdentPrefix   = 1
	IdentFQDN     = 2
	IdentUserFQDN = 3
)

// ipsec.h values: policy types, directions, modes, levels.
const (
	PolicyDiscard = 0
	PolicyNone    = 1
	PolicyIPsec   = 2
	PolicyEntrust = 3
	PolicyBypass  = 4

	DirAny      = 0
	DirInbound  = 1
	DirOutbound = 2
	DirFwd      = 3
	DirMax      = 4
	DirInvalid  = 5

	ModeAny       = 0
	ModeTransport = 1
	ModeTunnel    = 2
	ModeBEET      = 3

	LevelDefault = 0
	LevelUse     = 1
	LevelRequire = 2
	LevelUnique  = 3

	// ULProtoAny is IPSEC_ULPROTO_ANY, sadb_address_proto for any.
	ULProtoAny = 255
	// ProtoAny is IPSEC_PROTO_ANY.
	ProtoAny = 255
)

// Address families as Linux numbers them in sockaddr.
const (
	afInet  = 2
	afInet6 = 10
)

// Sizes of the fixed structures.
const (
	msgLen       = 16
	sockaddr4Len = 16
	sockaddr6Len = 28
	combLen      = 72
	algLen       = 8
	ipsecReqLen  = 16
)
