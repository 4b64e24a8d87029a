package pfkey

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func littleEndian() bool {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], 1)
	return b[0] == 1
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	var sb strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		sb.WriteString(strings.NewReplacer(" ", "", "\t", "").Replace(line))
	}
	b, err := hex.DecodeString(sb.String())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// addBytes is an SADB_ADD for ESP, AES-128-CBC + HMAC-SHA1, transport,
// 192.0.2.1 -> 192.0.2.2, SPI 0x1000, reqid 7, seq 1, pid 42, derived by
// hand from include/uapi/linux/pfkeyv2.h for a little-endian host (the
// byte order Linux uses for every length and count; SPI and port in network
// order). Extensions in the order ipsec-tools' pfkey_send_add emits them.
const addBytes = `
02 03 00 03   1b 00 00 00   01 00 00 00   2a 00 00 00 // sadb_msg: v2, ADD, errno 0, SATYPE_ESP, len 27*8=216, reserved, seq 1, pid 42
02 00 01 00   00 00 10 00   20 01 03 0c   00 00 00 00 // sadb_sa: len 2, ext 1; spi 0x1000 (BE); replay 32, MATURE, SHA1HMAC(3), AESCBC(12); flags 0
02 00 13 00   01 00 00 00   00 00 00 00   07 00 00 00 // sadb_x_sa2: len 2, ext 19; mode TRANSPORT(1), res; sequence 0; reqid 7
03 00 05 00   ff 20 00 00                             // sadb_address src: len 3, ext 5; proto 255 (any), prefixlen 32, reserved
02 00 00 00   c0 00 02 01   00 00 00 00   00 00 00 00 // sockaddr_in: AF_INET=2 (host order), port 0, 192.0.2.1, sin_zero
03 00 06 00   ff 20 00 00                             // sadb_address dst
02 00 00 00   c0 00 02 02   00 00 00 00   00 00 00 00
04 00 03 00   00 00 00 00   00 00 00 00   00 00 00 00 // sadb_lifetime hard: len 4 (32 bytes), ext 3; allocations 0 (u32); bytes 0 (u64)
10 0e 00 00   00 00 00 00   00 00 00 00   00 00 00 00 //   addtime 3600 (0xe10, u64), usetime 0 (u64)
04 00 04 00   00 00 00 00   00 00 00 00   00 00 00 00 // sadb_lifetime soft: ext 4
b8 0b 00 00   00 00 00 00   00 00 00 00   00 00 00 00 //   addtime 3000 (0xbb8)
04 00 08 00   a0 00 00 00                             // sadb_key auth: len 4 (8+20 -> 32), ext 8; bits 160
01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14   00 00 00 00 // key + 4 bytes padding
03 00 09 00   80 00 00 00                             // sadb_key encrypt: len 3 (8+16), ext 9; bits 128
00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff
`

// spdAddBytes is SADB_X_SPDADD, out, ipsec esp/tunnel/2001:db8::1-2001:db8::2/unique:5,
// priority 0x80000000 (setkey's default), selector 2001:db8::/64[any] ->
// 2001:db8::/64[443] tcp, seq 2, pid 42.
const spdAddBytes = `
02 0e 00 00   17 00 00 00   02 00 00 00   2a 00 00 00 // sadb_msg: X_SPDADD(14), satype 0, len 23 (16+40+40+88=184)
05 00 05 00   06 40 00 00                             // sadb_address src: len 5 (8+28 -> 40), proto tcp(6), prefixlen 64
0a 00 00 00   00 00 00 00                             // sockaddr_in6: AF_INET6=10, port 0, flowinfo 0
20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 00       // 2001:db8::
00 00 00 00   00 00 00 00                             // scope id, padding
05 00 06 00   06 40 00 00                             // sadb_address dst
0a 00 01 bb   00 00 00 00                             // port 443 (BE)
20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 00
00 00 00 00   00 00 00 00
0b 00 12 00   02 00 02 00   00 00 00 00   00 00 00 80 // sadb_x_policy: len 11 (16+72=88), ext 18; type IPSEC(2), dir OUT(2); id 0; priority 0x80000000
48 00 32 00   02 03 00 00   05 00 00 00   00 00 00 00 // ipsecrequest: len 72 (bytes), proto 50, mode TUNNEL(2), level UNIQUE(3); reqid 5
0a 00 00 00   00 00 00 00                             // sockaddr_in6 2001:db8::1
20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01
00 00 00 00
0a 00 00 00   00 00 00 00                             // sockaddr_in6 2001:db8::2
20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 02
00 00 00 00
`

func TestHandDerivedAdd(t *testing.T) {
	if !littleEndian() {
		t.Skip("bytes derived for a little-endian host")
	}
	want := unhex(t, addBytes)
	m := &Msg{
		Version: Version, Type: MsgAdd, SAType: SATypeESP, Seq: 1, PID: 42,
		SA:           &SA{SPI: 0x1000, Replay: 32, State: SAStateMature, Auth: AAlgSHA1HMAC, Encrypt: EAlgAESCBC},
		SA2:          &SA2{Mode: ModeTransport, ReqID: 7},
		Src:          &Address{Proto: ULProtoAny, PrefixLen: 32, Sockaddr: Sockaddr{Addr: a4}},
		Dst:          &Address{Proto: ULProtoAny, PrefixLen: 32, Sockaddr: Sockaddr{Addr: b4}},
		LifetimeHard: &Lifetime{AddTime: 3600},
		LifetimeSoft: &Lifetime{AddTime: 3000},
		KeyAuth:      &Key{Bits: 160, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}},
		KeyEncrypt:   &Key{Bits: 128, Data: key},
		Order:        []uint16{ExtSA, ExtXSA2, ExtAddressSrc, ExtAddressDst, ExtLifetimeHard, ExtLifetimeSoft, ExtKeyAuth, ExtKeyEncrypt},
	}
	got, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encode:\n got %x\nwant %x", got, want)
	}
	d, err := Decode(want)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d, m) {
		t.Fatalf("decode: got %+v\nwant %+v", d, m)
	}
	cfg, err := ConfigFromMsg(d)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Enc.Name != "aes-cbc" || cfg.Auth.Name != "hmac-sha1" || cfg.ReqID != 7 || cfg.Hard.AddSeconds != 3600 || cfg.SPI != 0x1000 {
		t.Fatalf("config %+v", cfg)
	}
}

func TestHandDerivedSPDAdd(t *testing.T) {
	if !littleEndian() {
		t.Skip("bytes derived for a little-endian host")
	}
	want := unhex(t, spdAddBytes)
	d, err := Decode(want)
	if err != nil {
		t.Fatal(err)
	}
	p, err := PolicyFromMsg(d)
	if err != nil {
		t.Fatal(err)
	}
	if p.Dir != 1 || p.Priority != 0x80000000 || p.Sel.Proto != 6 || p.Sel.DstPorts.Lo != 443 ||
		p.Sel.Src != netip.MustParsePrefix("2001:db8::/64") || len(p.Templates) != 1 ||
		p.Templates[0].Src != a6 || p.Templates[0].Dst != b6 || p.Templates[0].ReqID != 5 || p.Templates[0].Level != 3 || p.Templates[0].Mode != 1 {
		t.Fatalf("policy %+v", p)
	}
	m, err := PolicyMsg(p)
	if err != nil {
		t.Fatal(err)
	}
	m.Type, m.Seq, m.PID = MsgXSPDAdd, 2, 42
	got := m.MustEncode()
	if !bytes.Equal(got, want) {
		t.Fatalf("re-encode:\n got %x\nwant %x", got, want)
	}
}

func roundTrip(t *testing.T, m *Msg) []byte {
	t.Helper()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(b)%8 != 0 || int(binary.NativeEndian.Uint16(b[4:]))*8 != len(b) {
		t.Fatalf("bad length %d", len(b))
	}
	d, err := Decode(b)
	if err != nil {
		t.Fatalf("decode: %v\n%x", err, b)
	}
	d.Order = nil
	want := *m
	want.Order = nil
	if want.Version == 0 {
		want.Version = Version
	}
	if !reflect.DeepEqual(d, &want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", d, &want)
	}
	b2, _ := d.Encode()
	if !bytes.Equal(b, b2) {
		t.Fatal("re-encode differs")
	}
	return b
}

func TestRoundTripEveryExtension(t *testing.T) {
	m := Full()
	b := roundTrip(t, m)
	d, _ := Decode(b)
	if len(d.Order) != ExtMax {
		t.Fatalf("%d extensions, want %d", len(d.Order), ExtMax)
	}
	for i, typ := range d.Order {
		if int(typ) != i+1 {
			t.Fatalf("extension %d at position %d", typ, i)
		}
	}
}

func TestRoundTripEveryMessageType(t *testing.T) {
	for typ := uint8(1); typ <= MsgMax; typ++ {
		m := Full()
		m.Type = typ
		m.Errno = uint8(typ % 3)
		roundTrip(t, m)
		// and the bare header form every error reply has
		roundTrip(t, &Msg{Type: typ, SAType: SATypeAH, Seq: uint32(typ)})
	}
	if MsgName(MsgXSPDDelete2) != "X_SPDDELETE2" || MsgName(200) != "UNKNOWN" {
		t.Fatal("names")
	}
}

func TestDecodeKeepsOrder(t *testing.T) {
	m := Full()
	m.Order = []uint16{ExtAddressDst, ExtSA, ExtXFilter, ExtAddressSrc}
	b := m.MustEncode()
	d, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d.Order[:4], m.Order) {
		t.Fatalf("order %v", d.Order[:4])
	}
	if b2 := d.MustEncode(); !bytes.Equal(b, b2) {
		t.Fatal("re-encode differs")
	}
}

func TestDecodeMalformed(t *testing.T) {
	for _, c := range Malformed() {
		_, err := DecodeRequest(c.Msg)
		if err == nil || !errors.Is(err, c.Errno) {
			t.Errorf("%s: err %v, want %v", c.Name, err, c.Errno)
		}
	}
}

func TestErrorReply(t *testing.T) {
	req := (&Msg{Type: MsgXSPDAdd, Seq: 5, PID: 6}).MustEncode()
	r, err := Decode(ErrorReply(req, syscall.EEXIST))
	if err != nil {
		t.Fatal(err)
	}
	if r.Type != MsgXSPDAdd || r.Errno != uint8(syscall.EEXIST) || r.Seq != 5 || r.PID != 6 {
		t.Fatalf("%+v", r)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Full().MustEncode())
	f.Add((&Msg{Type: MsgRegister, SAType: SATypeESP}).MustEncode())
	for _, c := range Malformed() {
		if len(c.Msg) < 4096 {
			f.Add(c.Msg)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || pe.Errno == 0 {
				t.Fatalf("error without errno: %v", err)
			}
			return
		}
		b2, err := m.Encode()
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		m2, err := Decode(b2)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		b3, _ := m2.Encode()
		if !bytes.Equal(b2, b3) {
			t.Fatal("encoding not stable")
		}
	})
}

// TestKeyNeverPrinted: no fmt verb shows a key's bytes (keys never logged).
func TestKeyNeverPrinted(t *testing.T) {
	k := &Key{Bits: 128, Data: []byte{0xde, 0xad, 0xbe, 0xef, 0xca, 0xfe, 0xba, 0xbe, 1, 2, 3, 4, 5, 6, 7, 8}}
	m := &Msg{Type: MsgAdd, KeyEncrypt: k}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q"} {
		for _, v := range []any{k, *k} {
			if out := fmt.Sprintf(verb, v); strings.Contains(strings.ToLower(out), "dead") || strings.Contains(out, "222 173") || strings.Contains(out, "\\xde") {
				t.Errorf("%s of a key prints its bytes: %s", verb, out)
			}
		}
		if out := fmt.Sprintf(verb, m); strings.Contains(strings.ToLower(out), "deadbeef") || strings.Contains(out, "222 173") {
			t.Errorf("%s of a message prints a key's bytes: %s", verb, out)
		}
	}
}
