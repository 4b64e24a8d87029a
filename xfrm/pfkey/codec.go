package pfkey

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"
)

// host is the byte order of PF_KEY length and value fields: the machine's
// own, as Linux never converts them.
var host = binary.NativeEndian

var be = binary.BigEndian

// MaxMsgLen is the largest message the codec accepts or builds: the 16-bit
// sadb_msg_len counts 64-bit words.
const MaxMsgLen = 0xffff * 8

// Error is a codec or server error carrying the errno a PF_KEY reply
// reports in sadb_msg_errno.
type Error struct {
	Errno  syscall.Errno
	Reason string
}

// Error implements error.
func (e *Error) Error() string { return fmt.Sprintf("pfkey: %s (%s)", e.Reason, e.Errno.Error()) }

// Unwrap lets errors.Is(err, syscall.EINVAL) work.
func (e *Error) Unwrap() error { return e.Errno }

func errorf(errno syscall.Errno, format string, args ...any) *Error {
	return &Error{Errno: errno, Reason: fmt.Sprintf(format, args...)}
}

// Msg is a decoded PF_KEY message: the sadb_msg header and one field per
// extension type (nil when absent).
type Msg struct {
	Version  uint8 // PF_KEY_V2; Encode writes 2 when zero
	Type     uint8
	Errno    uint8
	SAType   uint8
	Reserved uint16
	Seq      uint32
	PID      uint32

	SA                                          *SA
	LifetimeCurrent, LifetimeHard, LifetimeSoft *Lifetime
	Src, Dst, Proxy                             *Address
	KeyAuth, KeyEncrypt                         *Key
	IdentSrc, IdentDst                          *Identity
	Sensitivity                                 *Sensitivity
	Proposal                                    *Proposal
	SupportedAuth, SupportedEncrypt             *Supported
	SPIRange                                    *SPIRange
	KMPrivate                                   *KMPrivate
	Policy                                      *Policy
	SA2                                         *SA2
	NATTType                                    *NATTType
	NATTSport, NATTDport                        *NATTPort
	NATTOA                                      *Address
	SecCtx                                      *SecCtx
	KMAddress                                   *KMAddress
	Filter                                      *Filter

	// Order is the order the extensions arrived in (Decode fills it).
	// Encode emits the extensions listed here first, in this order, then
	// any others by ascending type, so decoded messages re-encode to the
	// same bytes.
	Order []uint16
}

// SA is sadb_sa.
type SA struct {
	SPI     uint32 // host value; network order on the wire
	Replay  uint8
	State   uint8
	Auth    uint8
	Encrypt uint8
	Flags   uint32
}

// Lifetime is sadb_lifetime.
type Lifetime struct {
	Allocations uint32
	Bytes       uint64
	AddTime     uint64
	UseTime     uint64
}

// Sockaddr is a sockaddr_in or sockaddr_in6 as Linux lays them out.
type Sockaddr struct {
	Addr     netip.Addr
	Port     uint16
	FlowInfo uint32 // IPv6 only
	ScopeID  uint32 // IPv6 only
}

// Address is sadb_address with its sockaddr.
type Address struct {
	Proto     uint8
	PrefixLen uint8
	Reserved  uint16
	Sockaddr
}

// Key is sadb_key; Data holds ceil(Bits/8) bytes.
type Key struct {
	Bits     uint16
	Reserved uint16
	Data     []byte
}

// String gives the key's length, never its bytes: a message printed with
// %v must not leak key material into logs.
func (k Key) String() string { return fmt.Sprintf("sadb_key{%d bits}", k.Bits) }

// GoString is String, so %#v does not leak the key either.
func (k Key) GoString() string { return k.String() }

// Identity is sadb_ident followed by its string (kept with its padding).
type Identity struct {
	Type     uint16
	Reserved uint16
	ID       uint64
	Data     []byte
}

// Sensitivity is sadb_sens with its bitmaps.
type Sensitivity struct {
	DPD         uint32
	SensLevel   uint8
	IntegLevel  uint8
	Reserved    uint32
	SensBitmap  []uint64
	IntegBitmap []uint64
}

// Comb is sadb_comb.
type Comb struct {
	Auth, Encrypt                    uint8
	Flags                            uint16
	AuthMinBits, AuthMaxBits         uint16
	EncryptMinBits, EncryptMaxBits   uint16
	Reserved                         uint32
	SoftAllocations, HardAllocations uint32
	SoftBytes, HardBytes             uint64
	SoftAddTime, HardAddTime         uint64
	SoftUseTime, HardUseTime         uint64
}

// Proposal is sadb_prop with its combinations.
type Proposal struct {
	Replay   uint8
	Reserved [3]uint8
	Combs    []Comb
}

// Alg is sadb_alg.
type Alg struct {
	ID       uint8
	IVLen    uint8
	MinBits  uint16
	MaxBits  uint16
	Reserved uint16
}

// Supported is sadb_supported with its algorithms.
type Supported struct {
	Reserved uint32
	Algs     []Alg
}

// SPIRange is sadb_spirange (host byte order, as Linux reads it).
type SPIRange struct {
	Min, Max, Reserved uint32
}

// KMPrivate is sadb_x_kmprivate with its opaque data.
type KMPrivate struct {
	Reserved uint32
	Data     []byte
}

// IPsecRequest is sadb_x_ipsecrequest; Src and Dst are set only when the
// request carries addresses (tunnel mode).
type IPsecRequest struct {
	Proto     uint16
	Mode      uint8
	Level     uint8
	Reserved1 uint16
	ReqID     uint32
	Reserved2 uint32
	Src, Dst  *Sockaddr
}

// Policy is sadb_x_policy with its ipsecrequests.
type Policy struct {
	Type     uint16
	Dir      uint8
	Reserved uint8
	ID       uint32
	Priority uint32
	Requests []IPsecRequest
}

// SA2 is sadb_x_sa2.
type SA2 struct {
	Mode      uint8
	Reserved1 uint8
	Reserved2 uint16
	Sequence  uint32
	ReqID     uint32
}

// NATTType is sadb_x_nat_t_type.
type NATTType struct {
	Type     uint8
	Reserved [3]uint8
}

// NATTPort is sadb_x_nat_t_port (the port in network order on the wire).
type NATTPort struct {
	Port     uint16
	Reserved uint16
}

// SecCtx is sadb_x_sec_ctx with its context string.
type SecCtx struct {
	Alg, DOI uint8
	Ctx      []byte
}

// KMAddress is sadb_x_kmaddress with the local and remote addresses.
type KMAddress struct {
	Reserved      uint32
	Local, Remote Sockaddr
}

// Filter is sadb_x_filter.
type Filter struct {
	SAddr, DAddr [16]byte
	Family       uint16
	SPLen, DPLen uint8
}

// ext returns the field holding extension t, as an any wrapping a typed
// pointer (nil pointer when absent).
func (m *Msg) ext(t int) any {
	switch t {
	case ExtSA:
		return m.SA
	case ExtLifetimeCurrent:
		return m.LifetimeCurrent
	case ExtLifetimeHard:
		return m.LifetimeHard
	case ExtLifetimeSoft:
		return m.LifetimeSoft
	case ExtAddressSrc:
		return m.Src
	case ExtAddressDst:
		return m.Dst
	case ExtAddressProxy:
		return m.Proxy
	case ExtKeyAuth:
		return m.KeyAuth
	case ExtKeyEncrypt:
		return m.KeyEncrypt
	case ExtIdentitySrc:
		return m.IdentSrc
	case ExtIdentityDst:
		return m.IdentDst
	case ExtSensitivity:
		return m.Sensitivity
	case ExtProposal:
		return m.Proposal
	case ExtSupportedAuth:
		return m.SupportedAuth
	case ExtSupportedEncrypt:
		return m.SupportedEncrypt
	case ExtSPIRange:
		return m.SPIRange
	case ExtXKMPrivate:
		return m.KMPrivate
	case ExtXPolicy:
		return m.Policy
	case ExtXSA2:
		return m.SA2
	case ExtXNATTType:
		return m.NATTType
	case ExtXNATTSport:
		return m.NATTSport
	case ExtXNATTDport:
		return m.NATTDport
	case ExtXNATTOA:
		return m.NATTOA
	case ExtXSecCtx:
		return m.SecCtx
	case ExtXKMAddress:
		return m.KMAddress
	case ExtXFilter:
		return m.Filter
	}
	return nil
}

func (m *Msg) has(t int) bool {
	switch v := m.ext(t).(type) {
	case *SA:
		return v != nil
	case *Lifetime:
		return v != nil
	case *Address:
		return v != nil
	case *Key:
		return v != nil
	case *Identity:
		return v != nil
	case *Sensitivity:
		return v != nil
	case *Proposal:
		return v != nil
	case *Supported:
		return v != nil
	case *SPIRange:
		return v != nil
	case *KMPrivate:
		return v != nil
	case *Policy:
		return v != nil
	case *SA2:
		return v != nil
	case *NATTType:
		return v != nil
	case *NATTPort:
		return v != nil
	case *SecCtx:
		return v != nil
	case *KMAddress:
		return v != nil
	case *Filter:
		return v != nil
	}
	return false
}

func (m *Msg) set(t int, v any) {
	switch t {
	case ExtSA:
		m.SA = v.(*SA)
	case ExtLifetimeCurrent:
		m.LifetimeCurrent = v.(*Lifetime)
	case ExtLifetimeHard:
		m.LifetimeHard = v.(*Lifetime)
	case ExtLifetimeSoft:
		m.LifetimeSoft = v.(*Lifetime)
	case ExtAddressSrc:
		m.Src = v.(*Address)
	case ExtAddressDst:
		m.Dst = v.(*Address)
	case ExtAddressProxy:
		m.Proxy = v.(*Address)
	case ExtKeyAuth:
		m.KeyAuth = v.(*Key)
	case ExtKeyEncrypt:
		m.KeyEncrypt = v.(*Key)
	case ExtIdentitySrc:
		m.IdentSrc = v.(*Identity)
	case ExtIdentityDst:
		m.IdentDst = v.(*Identity)
	case ExtSensitivity:
		m.Sensitivity = v.(*Sensitivity)
	case ExtProposal:
		m.Proposal = v.(*Proposal)
	case ExtSupportedAuth:
		m.SupportedAuth = v.(*Supported)
	case ExtSupportedEncrypt:
		m.SupportedEncrypt = v.(*Supported)
	case ExtSPIRange:
		m.SPIRange = v.(*SPIRange)
	case ExtXKMPrivate:
		m.KMPrivate = v.(*KMPrivate)
	case ExtXPolicy:
		m.Policy = v.(*Policy)
	case ExtXSA2:
		m.SA2 = v.(*SA2)
	case ExtXNATTType:
		m.NATTType = v.(*NATTType)
	case ExtXNATTSport:
		m.NATTSport = v.(*NATTPort)
	case ExtXNATTDport:
		m.NATTDport = v.(*NATTPort)
	case ExtXNATTOA:
		m.NATTOA = v.(*Address)
	case ExtXSecCtx:
		m.SecCtx = v.(*SecCtx)
	case ExtXKMAddress:
		m.KMAddress = v.(*KMAddress)
	case ExtXFilter:
		m.Filter = v.(*Filter)
	}
}

// Decode parses one PF_KEY message strictly, as Linux's pfkey_get_base_msg
// and parse_exthdrs do: a wrong version or type is EINVAL, a header length
// that disagrees with the buffer EMSGSIZE, an extension of a bad length, a
// duplicate or an unknown type EINVAL. sadb_msg_reserved may be non-zero
// (kept in Msg.Reserved): Linux puts a policy's reference count there in
// the SPD messages it sends (key_notify_policy, dump_sp). A message to the
// kernel must have it zero: see DecodeRequest.
func Decode(b []byte) (*Msg, error) { return decode(b, false) }

// DecodeRequest is Decode for a message sent to the kernel (what the
// server receives): Linux's pfkey_get_base_msg also rejects a non-zero
// sadb_msg_reserved with EINVAL.
func DecodeRequest(b []byte) (*Msg, error) { return decode(b, true) }

func decode(b []byte, request bool) (*Msg, error) {
	if len(b) > MaxMsgLen {
		return nil, errorf(syscall.EMSGSIZE, "message of %d bytes exceeds %d", len(b), MaxMsgLen)
	}
	if len(b) < msgLen {
		return nil, errorf(syscall.EINVAL, "message of %d bytes is shorter than sadb_msg", len(b))
	}
	m := &Msg{
		Version: b[0], Type: b[1], Errno: b[2], SAType: b[3],
		Reserved: host.Uint16(b[6:]), Seq: host.Uint32(b[8:]), PID: host.Uint32(b[12:]),
	}
	if m.Version != Version {
		return nil, errorf(syscall.EINVAL, "version %d, want %d", m.Version, Version)
	}
	if request && m.Reserved != 0 {
		return nil, errorf(syscall.EINVAL, "sadb_msg_reserved is %d", m.Reserved)
	}
	if m.Type == MsgReserved || m.Type > MsgMax {
		return nil, errorf(syscall.EINVAL, "message type %d", m.Type)
	}
	if n := int(host.Uint16(b[4:])) * 8; n != len(b) {
		return nil, errorf(syscall.EMSGSIZE, "sadb_msg_len says %d bytes, message has %d", n, len(b))
	}
	seen := uint32(0)
	for off := msgLen; off < len(b); {
		if len(b)-off < 4 {
			return nil, errorf(syscall.EINVAL, "truncated extension header at %d", off)
		}
		n := int(host.Uint16(b[off:])) * 8
		t := int(host.Uint16(b[off+2:]))
		if n < 8 || n > len(b)-off {
			return nil, errorf(syscall.EINVAL, "extension type %d at %d: length %d bytes", t, off, n)
		}
		if t == ExtReserved || t > ExtMax {
			return nil, errorf(syscall.EINVAL, "unknown extension type %d at %d", t, off)
		}
		if seen&(1<<t) != 0 {
			return nil, errorf(syscall.EINVAL, "duplicate extension type %d at %d", t, off)
		}
		seen |= 1 << t
		v, err := decodeExt(t, b[off+4:off+n])
		if err != nil {
			return nil, errorf(syscall.EINVAL, "extension type %d at %d: %s", t, off, err)
		}
		m.set(t, v)
		m.Order = append(m.Order, uint16(t))
		off += n
	}
	return m, nil
}

type decErr string

func (e decErr) Error() string { return string(e) }

func fixed(body []byte, n int) error {
	if len(body) != n {
		return decErr(fmt.Sprintf("length %d bytes, want %d", len(body)+4, n+4))
	}
	return nil
}

// decodeExt parses an extension body (after the 4-byte sadb_ext header).
func decodeExt(t int, p []byte) (any, error) {
	switch t {
	case ExtSA:
		if err := fixed(p, 12); err != nil {
			return nil, err
		}
		return &SA{SPI: be.Uint32(p), Replay: p[4], State: p[5], Auth: p[6], Encrypt: p[7], Flags: host.Uint32(p[8:])}, nil
	case ExtLifetimeCurrent, ExtLifetimeHard, ExtLifetimeSoft:
		if err := fixed(p, 28); err != nil {
			return nil, err
		}
		return &Lifetime{Allocations: host.Uint32(p), Bytes: host.Uint64(p[4:]), AddTime: host.Uint64(p[12:]), UseTime: host.Uint64(p[20:])}, nil
	case ExtAddressSrc, ExtAddressDst, ExtAddressProxy, ExtXNATTOA:
		if len(p) < 4 {
			return nil, decErr("short sadb_address")
		}
		a := &Address{Proto: p[0], PrefixLen: p[1], Reserved: host.Uint16(p[2:])}
		sa, n, err := decodeSockaddr(p[4:])
		if err != nil {
			return nil, err
		}
		if pad8(8+n) != len(p)+4 {
			return nil, decErr(fmt.Sprintf("sadb_address of %d bytes for a %d-byte sockaddr", len(p)+4, n))
		}
		if !zero(p[4+n:]) {
			return nil, decErr("non-zero padding after sockaddr")
		}
		if int(a.PrefixLen) > sa.Addr.BitLen() {
			return nil, decErr(fmt.Sprintf("prefix length %d for %v", a.PrefixLen, sa.Addr))
		}
		a.Sockaddr = sa
		return a, nil
	case ExtKeyAuth, ExtKeyEncrypt:
		if len(p) < 4 {
			return nil, decErr("short sadb_key")
		}
		k := &Key{Bits: host.Uint16(p), Reserved: host.Uint16(p[2:])}
		n := (int(k.Bits) + 7) / 8
		if pad8(8+n) != len(p)+4 {
			return nil, decErr(fmt.Sprintf("sadb_key of %d bytes for %d key bits", len(p)+4, k.Bits))
		}
		k.Data = append([]byte(nil), p[4:4+n]...)
		return k, nil
	case ExtIdentitySrc, ExtIdentityDst:
		if len(p) < 12 {
			return nil, decErr("short sadb_ident")
		}
		return &Identity{Type: host.Uint16(p), Reserved: host.Uint16(p[2:]), ID: host.Uint64(p[4:]), Data: append([]byte(nil), p[12:]...)}, nil
	case ExtSensitivity:
		if len(p) < 12 {
			return nil, decErr("short sadb_sens")
		}
		s := &Sensitivity{DPD: host.Uint32(p), SensLevel: p[4], IntegLevel: p[6], Reserved: host.Uint32(p[8:])}
		sl, il := int(p[5]), int(p[7])
		if len(p) != 12+8*(sl+il) {
			return nil, decErr(fmt.Sprintf("sadb_sens of %d bytes with %d+%d bitmap words", len(p)+4, sl, il))
		}
		q := p[12:]
		for i := 0; i < sl; i++ {
			s.SensBitmap = append(s.SensBitmap, host.Uint64(q[8*i:]))
		}
		q = q[8*sl:]
		for i := 0; i < il; i++ {
			s.IntegBitmap = append(s.IntegBitmap, host.Uint64(q[8*i:]))
		}
		return s, nil
	case ExtProposal:
		if len(p) < 4 || (len(p)-4)%combLen != 0 {
			return nil, decErr(fmt.Sprintf("sadb_prop of %d bytes is not 8 + n*72", len(p)+4))
		}
		pr := &Proposal{Replay: p[0], Reserved: [3]uint8{p[1], p[2], p[3]}}
		for q := p[4:]; len(q) > 0; q = q[combLen:] {
			pr.Combs = append(pr.Combs, Comb{
				Auth: q[0], Encrypt: q[1], Flags: host.Uint16(q[2:]),
				AuthMinBits: host.Uint16(q[4:]), AuthMaxBits: host.Uint16(q[6:]),
				EncryptMinBits: host.Uint16(q[8:]), EncryptMaxBits: host.Uint16(q[10:]),
				Reserved: host.Uint32(q[12:]), SoftAllocations: host.Uint32(q[16:]), HardAllocations: host.Uint32(q[20:]),
				SoftBytes: host.Uint64(q[24:]), HardBytes: host.Uint64(q[32:]),
				SoftAddTime: host.Uint64(q[40:]), HardAddTime: host.Uint64(q[48:]),
				SoftUseTime: host.Uint64(q[56:]), HardUseTime: host.Uint64(q[64:]),
			})
		}
		return pr, nil
	case ExtSupportedAuth, ExtSupportedEncrypt:
		if len(p) < 4 || (len(p)-4)%algLen != 0 {
			return nil, decErr("bad sadb_supported length")
		}
		s := &Supported{Reserved: host.Uint32(p)}
		for q := p[4:]; len(q) > 0; q = q[algLen:] {
			s.Algs = append(s.Algs, Alg{ID: q[0], IVLen: q[1], MinBits: host.Uint16(q[2:]), MaxBits: host.Uint16(q[4:]), Reserved: host.Uint16(q[6:])})
		}
		return s, nil
	case ExtSPIRange:
		if err := fixed(p, 12); err != nil {
			return nil, err
		}
		return &SPIRange{Min: host.Uint32(p), Max: host.Uint32(p[4:]), Reserved: host.Uint32(p[8:])}, nil
	case ExtXKMPrivate:
		if len(p) < 4 {
			return nil, decErr("short sadb_x_kmprivate")
		}
		return &KMPrivate{Reserved: host.Uint32(p), Data: append([]byte(nil), p[4:]...)}, nil
	case ExtXPolicy:
		return decodePolicy(p)
	case ExtXSA2:
		if err := fixed(p, 12); err != nil {
			return nil, err
		}
		return &SA2{Mode: p[0], Reserved1: p[1], Reserved2: host.Uint16(p[2:]), Sequence: host.Uint32(p[4:]), ReqID: host.Uint32(p[8:])}, nil
	case ExtXNATTType:
		if err := fixed(p, 4); err != nil {
			return nil, err
		}
		return &NATTType{Type: p[0], Reserved: [3]uint8{p[1], p[2], p[3]}}, nil
	case ExtXNATTSport, ExtXNATTDport:
		if err := fixed(p, 4); err != nil {
			return nil, err
		}
		return &NATTPort{Port: be.Uint16(p), Reserved: host.Uint16(p[2:])}, nil
	case ExtXSecCtx:
		if len(p) < 4 {
			return nil, decErr("short sadb_x_sec_ctx")
		}
		n := int(host.Uint16(p[2:]))
		if pad8(8+n) != len(p)+4 {
			return nil, decErr(fmt.Sprintf("sadb_x_sec_ctx of %d bytes for a %d-byte context", len(p)+4, n))
		}
		return &SecCtx{Alg: p[0], DOI: p[1], Ctx: append([]byte(nil), p[4:4+n]...)}, nil
	case ExtXKMAddress:
		if len(p) < 4 {
			return nil, decErr("short sadb_x_kmaddress")
		}
		k := &KMAddress{Reserved: host.Uint32(p)}
		l, n1, err := decodeSockaddr(p[4:])
		if err != nil {
			return nil, err
		}
		r, n2, err := decodeSockaddr(p[4+n1:])
		if err != nil {
			return nil, err
		}
		if l.Addr.Is4() != r.Addr.Is4() {
			return nil, decErr("kmaddress families differ")
		}
		if pad8(8+n1+n2) != len(p)+4 || !zero(p[4+n1+n2:]) {
			return nil, decErr("bad sadb_x_kmaddress length")
		}
		k.Local, k.Remote = l, r
		return k, nil
	case ExtXFilter:
		if err := fixed(p, 36); err != nil {
			return nil, err
		}
		f := &Filter{Family: host.Uint16(p[32:]), SPLen: p[34], DPLen: p[35]}
		copy(f.SAddr[:], p[0:16])
		copy(f.DAddr[:], p[16:32])
		return f, nil
	}
	return nil, decErr("unknown extension")
}

func decodePolicy(p []byte) (*Policy, error) {
	if len(p) < 12 {
		return nil, decErr("short sadb_x_policy")
	}
	pol := &Policy{Type: host.Uint16(p), Dir: p[2], Reserved: p[3], ID: host.Uint32(p[4:]), Priority: host.Uint32(p[8:])}
	for q := p[12:]; len(q) > 0; {
		if len(q) < ipsecReqLen {
			return nil, decErr(fmt.Sprintf("%d trailing bytes after the ipsecrequests", len(q)))
		}
		n := int(host.Uint16(q))
		if n < ipsecReqLen || n > len(q) {
			return nil, decErr(fmt.Sprintf("ipsecrequest length %d", n))
		}
		r := IPsecRequest{Proto: host.Uint16(q[2:]), Mode: q[4], Level: q[5], Reserved1: host.Uint16(q[6:]), ReqID: host.Uint32(q[8:]), Reserved2: host.Uint32(q[12:])}
		if n > ipsecReqLen {
			s, n1, err := decodeSockaddr(q[ipsecReqLen:n])
			if err != nil {
				return nil, err
			}
			d, n2, err := decodeSockaddr(q[ipsecReqLen+n1 : n])
			if err != nil {
				return nil, err
			}
			if ipsecReqLen+n1+n2 != n {
				return nil, decErr(fmt.Sprintf("ipsecrequest length %d for its addresses", n))
			}
			if s.Addr.Is4() != d.Addr.Is4() {
				return nil, decErr("ipsecrequest address families differ")
			}
			r.Src, r.Dst = &s, &d
		}
		pol.Requests = append(pol.Requests, r)
		q = q[n:]
	}
	return pol, nil
}

func decodeSockaddr(p []byte) (Sockaddr, int, error) {
	if len(p) < 2 {
		return Sockaddr{}, 0, decErr("short sockaddr")
	}
	switch host.Uint16(p) {
	case afInet:
		if len(p) < sockaddr4Len {
			return Sockaddr{}, 0, decErr("short sockaddr_in")
		}
		if !zero(p[8:16]) {
			return Sockaddr{}, 0, decErr("non-zero sin_zero")
		}
		return Sockaddr{Addr: netip.AddrFrom4([4]byte(p[4:8])), Port: be.Uint16(p[2:])}, sockaddr4Len, nil
	case afInet6:
		if len(p) < sockaddr6Len {
			return Sockaddr{}, 0, decErr("short sockaddr_in6")
		}
		return Sockaddr{Addr: netip.AddrFrom16([16]byte(p[8:24])), Port: be.Uint16(p[2:]),
			FlowInfo: be.Uint32(p[4:]), ScopeID: host.Uint32(p[24:])}, sockaddr6Len, nil
	}
	return Sockaddr{}, 0, decErr(fmt.Sprintf("address family %d", host.Uint16(p)))
}

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func pad8(n int) int { return (n + 7) &^ 7 }

// Encode builds the wire form of m.
func (m *Msg) Encode() ([]byte, error) {
	b := make([]byte, msgLen, 256)
	v := m.Version
	if v == 0 {
		v = Version
	}
	b[0], b[1], b[2], b[3] = v, m.Type, m.Errno, m.SAType
	host.PutUint16(b[6:], m.Reserved)
	host.PutUint32(b[8:], m.Seq)
	host.PutUint32(b[12:], m.PID)
	var done uint32
	emit := func(t int) error {
		if done&(1<<t) != 0 || !m.has(t) {
			return nil
		}
		done |= 1 << t
		start := len(b)
		b = append(b, 0, 0, 0, 0)
		host.PutUint16(b[start+2:], uint16(t))
		var err error
		b, err = appendExt(b, m.ext(t))
		if err != nil {
			return errorf(syscall.EINVAL, "extension type %d: %v", t, err)
		}
		for len(b)%8 != 0 {
			b = append(b, 0)
		}
		n := (len(b) - start) / 8
		if n > 0xffff {
			return errorf(syscall.EMSGSIZE, "extension type %d of %d bytes", t, len(b)-start)
		}
		host.PutUint16(b[start:], uint16(n))
		return nil
	}
	for _, t := range m.Order {
		if t > 0 && t <= ExtMax {
			if err := emit(int(t)); err != nil {
				return nil, err
			}
		}
	}
	for t := 1; t <= ExtMax; t++ {
		if err := emit(t); err != nil {
			return nil, err
		}
	}
	if len(b) > MaxMsgLen {
		return nil, errorf(syscall.EMSGSIZE, "message of %d bytes", len(b))
	}
	host.PutUint16(b[4:], uint16(len(b)/8))
	return b, nil
}

// MustEncode is Encode for messages known to be well formed.
func (m *Msg) MustEncode() []byte {
	b, err := m.Encode()
	if err != nil {
		panic(err)
	}
	return b
}

func appendSockaddr(b []byte, s *Sockaddr) ([]byte, error) {
	switch {
	case s.Addr.Is4():
		b = host.AppendUint16(b, afInet)
		b = be.AppendUint16(b, s.Port)
		a := s.Addr.As4()
		b = append(b, a[:]...)
		return append(b, make([]byte, 8)...), nil
	case s.Addr.Is6():
		b = host.AppendUint16(b, afInet6)
		b = be.AppendUint16(b, s.Port)
		b = be.AppendUint32(b, s.FlowInfo)
		a := s.Addr.As16()
		b = append(b, a[:]...)
		return host.AppendUint32(b, s.ScopeID), nil
	}
	return b, fmt.Errorf("invalid address")
}

func appendExt(b []byte, v any) ([]byte, error) {
	switch e := v.(type) {
	case *SA:
		b = be.AppendUint32(b, e.SPI)
		b = append(b, e.Replay, e.State, e.Auth, e.Encrypt)
		return host.AppendUint32(b, e.Flags), nil
	case *Lifetime:
		b = host.AppendUint32(b, e.Allocations)
		b = host.AppendUint64(b, e.Bytes)
		b = host.AppendUint64(b, e.AddTime)
		return host.AppendUint64(b, e.UseTime), nil
	case *Address:
		if e.Addr.IsValid() && int(e.PrefixLen) > e.Addr.BitLen() {
			return b, fmt.Errorf("prefix length %d", e.PrefixLen)
		}
		b = append(b, e.Proto, e.PrefixLen)
		b = host.AppendUint16(b, e.Reserved)
		return appendSockaddr(b, &e.Sockaddr)
	case *Key:
		if len(e.Data) != (int(e.Bits)+7)/8 {
			return b, fmt.Errorf("%d key bytes for %d bits", len(e.Data), e.Bits)
		}
		b = host.AppendUint16(b, e.Bits)
		b = host.AppendUint16(b, e.Reserved)
		return append(b, e.Data...), nil
	case *Identity:
		b = host.AppendUint16(b, e.Type)
		b = host.AppendUint16(b, e.Reserved)
		b = host.AppendUint64(b, e.ID)
		return append(b, e.Data...), nil
	case *Sensitivity:
		if len(e.SensBitmap) > 255 || len(e.IntegBitmap) > 255 {
			return b, fmt.Errorf("bitmap too long")
		}
		b = host.AppendUint32(b, e.DPD)
		b = append(b, e.SensLevel, uint8(len(e.SensBitmap)), e.IntegLevel, uint8(len(e.IntegBitmap)))
		b = host.AppendUint32(b, e.Reserved)
		for _, w := range e.SensBitmap {
			b = host.AppendUint64(b, w)
		}
		for _, w := range e.IntegBitmap {
			b = host.AppendUint64(b, w)
		}
		return b, nil
	case *Proposal:
		b = append(b, e.Replay, e.Reserved[0], e.Reserved[1], e.Reserved[2])
		for _, c := range e.Combs {
			b = append(b, c.Auth, c.Encrypt)
			b = host.AppendUint16(b, c.Flags)
			b = host.AppendUint16(b, c.AuthMinBits)
			b = host.AppendUint16(b, c.AuthMaxBits)
			b = host.AppendUint16(b, c.EncryptMinBits)
			b = host.AppendUint16(b, c.EncryptMaxBits)
			b = host.AppendUint32(b, c.Reserved)
			b = host.AppendUint32(b, c.SoftAllocations)
			b = host.AppendUint32(b, c.HardAllocations)
			for _, x := range []uint64{c.SoftBytes, c.HardBytes, c.SoftAddTime, c.HardAddTime, c.SoftUseTime, c.HardUseTime} {
				b = host.AppendUint64(b, x)
			}
		}
		return b, nil
	case *Supported:
		b = host.AppendUint32(b, e.Reserved)
		for _, a := range e.Algs {
			b = append(b, a.ID, a.IVLen)
			b = host.AppendUint16(b, a.MinBits)
			b = host.AppendUint16(b, a.MaxBits)
			b = host.AppendUint16(b, a.Reserved)
		}
		return b, nil
	case *SPIRange:
		b = host.AppendUint32(b, e.Min)
		b = host.AppendUint32(b, e.Max)
		return host.AppendUint32(b, e.Reserved), nil
	case *KMPrivate:
		b = host.AppendUint32(b, e.Reserved)
		return append(b, e.Data...), nil
	case *Policy:
		b = host.AppendUint16(b, e.Type)
		b = append(b, e.Dir, e.Reserved)
		b = host.AppendUint32(b, e.ID)
		b = host.AppendUint32(b, e.Priority)
		for i := range e.Requests {
			r := &e.Requests[i]
			start := len(b)
			b = append(b, 0, 0)
			b = host.AppendUint16(b, r.Proto)
			b = append(b, r.Mode, r.Level)
			b = host.AppendUint16(b, r.Reserved1)
			b = host.AppendUint32(b, r.ReqID)
			b = host.AppendUint32(b, r.Reserved2)
			if (r.Src == nil) != (r.Dst == nil) {
				return b, fmt.Errorf("ipsecrequest with only one address")
			}
			if r.Src != nil {
				if r.Src.Addr.Is4() != r.Dst.Addr.Is4() {
					return b, fmt.Errorf("ipsecrequest address families differ")
				}
				var err error
				if b, err = appendSockaddr(b, r.Src); err != nil {
					return b, err
				}
				if b, err = appendSockaddr(b, r.Dst); err != nil {
					return b, err
				}
			}
			host.PutUint16(b[start:], uint16(len(b)-start))
		}
		return b, nil
	case *SA2:
		b = append(b, e.Mode, e.Reserved1)
		b = host.AppendUint16(b, e.Reserved2)
		b = host.AppendUint32(b, e.Sequence)
		return host.AppendUint32(b, e.ReqID), nil
	case *NATTType:
		return append(b, e.Type, e.Reserved[0], e.Reserved[1], e.Reserved[2]), nil
	case *NATTPort:
		b = be.AppendUint16(b, e.Port)
		return host.AppendUint16(b, e.Reserved), nil
	case *SecCtx:
		if len(e.Ctx) > 0xffff {
			return b, fmt.Errorf("context too long")
		}
		b = append(b, e.Alg, e.DOI)
		b = host.AppendUint16(b, uint16(len(e.Ctx)))
		return append(b, e.Ctx...), nil
	case *KMAddress:
		b = host.AppendUint32(b, e.Reserved)
		var err error
		if b, err = appendSockaddr(b, &e.Local); err != nil {
			return b, err
		}
		return appendSockaddr(b, &e.Remote)
	case *Filter:
		b = append(b, e.SAddr[:]...)
		b = append(b, e.DAddr[:]...)
		b = host.AppendUint16(b, e.Family)
		return append(b, e.SPLen, e.DPLen), nil
	}
	return b, fmt.Errorf("unknown extension value %T", v)
}

// ErrorReply builds the reply Linux's pfkey_error sends: the request's
// header with sadb_msg_errno set and no extensions.
func ErrorReply(req []byte, errno syscall.Errno) []byte {
	b := make([]byte, msgLen)
	copy(b, req)
	if len(req) < msgLen {
		b[1] = 0
	}
	b[0] = Version
	b[2] = uint8(errno)
	host.PutUint16(b[4:], msgLen/8)
	host.PutUint16(b[6:], 0)
	return b
}
