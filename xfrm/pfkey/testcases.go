package pfkey

import (
	"encoding/binary"
	"net/netip"
	"syscall"
)

// This file holds the codec's test corpus, exported so the control
// socket's tests replay the same malformed messages over the socket.

var (
	a4  = netip.MustParseAddr("192.0.2.1")
	b4  = netip.MustParseAddr("192.0.2.2")
	a6  = netip.MustParseAddr("2001:db8::1")
	b6  = netip.MustParseAddr("2001:db8::2")
	key = []byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
)

// Full returns a message carrying every extension (a test corpus entry).
func Full() *Msg {
	sa6 := Sockaddr{Addr: a6, Port: 500, FlowInfo: 0x12345, ScopeID: 3}
	return &Msg{
		Type: MsgAdd, SAType: SATypeESP, Seq: 7, PID: 99,
		SA:               &SA{SPI: 0xdeadbeef, Replay: 64, State: SAStateDying, Auth: 5, Encrypt: 20, Flags: SAFlagNoECN},
		LifetimeCurrent:  &Lifetime{Allocations: 1, Bytes: 2, AddTime: 3, UseTime: 4},
		LifetimeHard:     &Lifetime{Allocations: 5, Bytes: 6, AddTime: 7, UseTime: 8},
		LifetimeSoft:     &Lifetime{Allocations: 9, Bytes: 10, AddTime: 11, UseTime: 12},
		Src:              &Address{Proto: 6, PrefixLen: 64, Sockaddr: sa6},
		Dst:              &Address{Proto: 6, PrefixLen: 128, Sockaddr: Sockaddr{Addr: b6, Port: 4500}},
		Proxy:            &Address{PrefixLen: 24, Sockaddr: Sockaddr{Addr: a4, Port: 1}},
		KeyAuth:          &Key{Bits: 12, Data: []byte{0xab, 0xc0}},
		KeyEncrypt:       &Key{Bits: 160, Data: append(append([]byte{}, key...), 1, 2, 3, 4)},
		IdentSrc:         &Identity{Type: IdentFQDN, ID: 77, Data: []byte("host.example\x00\x00\x00\x00")},
		IdentDst:         &Identity{Type: IdentUserFQDN, ID: 78},
		Sensitivity:      &Sensitivity{DPD: 1, SensLevel: 2, IntegLevel: 3, SensBitmap: []uint64{1, 2}, IntegBitmap: []uint64{3}},
		Proposal:         &Proposal{Replay: 32, Combs: []Comb{{Auth: 3, Encrypt: 12, AuthMinBits: 160, AuthMaxBits: 160, EncryptMinBits: 128, EncryptMaxBits: 256, HardAddTime: 86400}, {Encrypt: 20}}},
		SupportedAuth:    &Supported{Algs: []Alg{{ID: 3, MinBits: 160, MaxBits: 160}}},
		SupportedEncrypt: &Supported{Algs: []Alg{{ID: 12, IVLen: 16, MinBits: 128, MaxBits: 256}, {ID: 20, IVLen: 8, MinBits: 128, MaxBits: 256}}},
		SPIRange:         &SPIRange{Min: 0x100, Max: 0xffff},
		KMPrivate:        &KMPrivate{Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		Policy: &Policy{Type: PolicyIPsec, Dir: DirOutbound, ID: 9, Priority: 10, Requests: []IPsecRequest{
			{Proto: 50, Mode: ModeTransport, Level: LevelRequire},
			{Proto: 51, Mode: ModeTunnel, Level: LevelUnique, ReqID: 3, Src: &Sockaddr{Addr: a4}, Dst: &Sockaddr{Addr: b4}},
		}},
		SA2:       &SA2{Mode: ModeTunnel, Sequence: 5, ReqID: 6},
		NATTType:  &NATTType{Type: 2},
		NATTSport: &NATTPort{Port: 4500},
		NATTDport: &NATTPort{Port: 4501},
		NATTOA:    &Address{PrefixLen: 32, Sockaddr: Sockaddr{Addr: b4}},
		SecCtx:    &SecCtx{Alg: 1, DOI: 1, Ctx: []byte("system_u:object_r:ipsec_spd_t:s0")},
		KMAddress: &KMAddress{Local: Sockaddr{Addr: a6}, Remote: Sockaddr{Addr: b6}},
		Filter:    &Filter{SAddr: a6.As16(), DAddr: b6.As16(), Family: 10, SPLen: 64, DPLen: 64},
	}
}

func withExt(hdr []byte, exts ...[]byte) []byte {
	b := append([]byte(nil), hdr...)
	for _, e := range exts {
		b = append(b, e...)
	}
	binary.NativeEndian.PutUint16(b[4:], uint16(len(b)/8))
	return b
}

func ext(typ uint16, body ...byte) []byte {
	b := make([]byte, 4, 4+len(body))
	b = append(b, body...)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	binary.NativeEndian.PutUint16(b, uint16(len(b)/8))
	binary.NativeEndian.PutUint16(b[2:], typ)
	return b
}

// Malformed returns bad messages and the errno each must get (a test
// corpus: bad lengths, duplicate and unknown extensions, oversize).
func Malformed() []struct {
	Name  string
	Msg   []byte
	Errno syscall.Errno
} {
	hdr := (&Msg{Type: MsgAdd, SAType: SATypeESP, Seq: 1}).MustEncode()
	good := Full()
	good.Type = MsgXSPDAdd
	gb := good.MustEncode()
	saExt := ext(ExtSA, make([]byte, 12)...)
	mut := func(b []byte, f func([]byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	type tc = struct {
		Name  string
		Msg   []byte
		Errno syscall.Errno
	}
	addr4 := func(typ uint16, fam uint16, prefix uint8, pad int) []byte {
		body := []byte{255, prefix, 0, 0}
		sa := make([]byte, 16)
		binary.NativeEndian.PutUint16(sa, fam)
		copy(sa[4:], []byte{192, 0, 2, 1})
		body = append(body, sa...)
		body = append(body, make([]byte, pad)...)
		return ext(typ, body...)
	}
	return []tc{
		{"empty", nil, syscall.EINVAL},
		{"short header", hdr[:8], syscall.EINVAL},
		{"bad version", mut(hdr, func(b []byte) { b[0] = 1 }), syscall.EINVAL},
		{"reserved set", mut(hdr, func(b []byte) { b[6] = 1 }), syscall.EINVAL},
		{"type 0", mut(hdr, func(b []byte) { b[1] = 0 }), syscall.EINVAL},
		{"type past max", mut(hdr, func(b []byte) { b[1] = MsgMax + 1 }), syscall.EINVAL},
		{"length too long", mut(hdr, func(b []byte) { b[4] = 3 }), syscall.EMSGSIZE},
		{"length too short", mut(withExt(hdr, saExt), func(b []byte) { b[4] = 2 }), syscall.EMSGSIZE},
		{"length zero", mut(hdr, func(b []byte) { b[4] = 0 }), syscall.EMSGSIZE},
		{"trailing partial extension", withExt(hdr, []byte{1, 0, 1, 0, 0, 0, 0, 0}[:8]), syscall.EINVAL},
		{"extension length 0", withExt(hdr, mut(saExt, func(b []byte) { b[0] = 0 })), syscall.EINVAL},
		{"extension overruns", withExt(hdr, mut(saExt, func(b []byte) { b[0] = 9 })), syscall.EINVAL},
		{"extension type 0", withExt(hdr, mut(saExt, func(b []byte) { b[2] = 0 })), syscall.EINVAL},
		{"unknown extension type", withExt(hdr, mut(saExt, func(b []byte) { b[2] = ExtMax + 1 })), syscall.EINVAL},
		{"duplicate extension", withExt(hdr, saExt, saExt), syscall.EINVAL},
		{"SA extension too long", withExt(hdr, ext(ExtSA, make([]byte, 20)...)), syscall.EINVAL},
		{"lifetime too short", withExt(hdr, ext(ExtLifetimeHard, make([]byte, 12)...)), syscall.EINVAL},
		{"address family 7", withExt(hdr, addr4(ExtAddressSrc, 7, 32, 0)), syscall.EINVAL},
		{"address prefix 33", withExt(hdr, addr4(ExtAddressSrc, 2, 33, 0)), syscall.EINVAL},
		{"address extension padded", withExt(hdr, addr4(ExtAddressSrc, 2, 32, 8)), syscall.EINVAL},
		{"key bits beyond extension", withExt(hdr, ext(ExtKeyEncrypt, 0, 1, 0, 0, 1, 2, 3, 4)), syscall.EINVAL},
		{"proposal bad length", withExt(hdr, ext(ExtProposal, make([]byte, 12)...)), syscall.EINVAL},
		{"sens bitmap count", withExt(hdr, ext(ExtSensitivity, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0)), syscall.EINVAL},
		{"ipsecrequest length 8", withExt(hdr, ext(ExtXPolicy, append([]byte{2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 8, 0, 50, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)...)), syscall.EINVAL},
		{"sec ctx length", withExt(hdr, ext(ExtXSecCtx, 1, 1, 200, 0)), syscall.EINVAL},
		{"nat-t port too long", withExt(hdr, ext(ExtXNATTSport, make([]byte, 12)...)), syscall.EINVAL},
		{"filter too short", withExt(hdr, ext(ExtXFilter, make([]byte, 20)...)), syscall.EINVAL},
		{"truncated spdadd", gb[:len(gb)-8], syscall.EMSGSIZE},
		{"oversize", make([]byte, MaxMsgLen+8), syscall.EMSGSIZE},
	}
}
