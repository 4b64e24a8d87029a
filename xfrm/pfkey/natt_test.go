package pfkey

import (
	"bytes"
	"net/netip"
	"reflect"
	"syscall"
	"testing"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

var (
	nattUs   = netip.MustParseAddr("10.0.0.1")
	nattPeer = netip.MustParseAddr("192.0.2.1")
	nattOA   = netip.MustParseAddr("198.51.100.7")
	gcmKey   = []byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0xca, 0xfe, 0xba, 0xbe}
)

// nattConfig is a UDP-encapsulated ESP SA, AES-GCM-16, tunnel, reqid 5.
func nattConfig(src, dst netip.Addr) xfrm.SAConfig {
	return xfrm.SAConfig{Proto: xfrm.ProtoESP, SPI: 0x1000, Src: src, Dst: dst, Mode: xfrm.ModeTunnel, ReqID: 5,
		ReplayWindow: 32, AEAD: xfrm.Algorithm{Name: "aes-gcm-16", Key: gcmKey},
		Encap: xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 4500, DPort: 4500, OA: nattOA}}
}

// nattAddBytes is the SADB_ADD SAMsg builds for nattConfig(10.0.0.1,
// 192.0.2.1), seq 1, pid 42, derived by hand from the structures of
// include/uapi/linux/pfkeyv2.h (little-endian host): struct
// sadb_x_nat_t_type {u16 len; u16 exttype; u8 type; u8 reserved[3]} and
// struct sadb_x_nat_t_port {u16 len; u16 exttype; __be16 port; u16
// reserved}, 8 bytes each; NAT_T_OA is a struct sadb_address with its
// sockaddr, which af_key's parse_exthdrs checks with verify_address_len.
const nattAddBytes = `
02 03 00 03   16 00 00 00   01 00 00 00   2a 00 00 00 // sadb_msg: v2, ADD, SATYPE_ESP, len 22 (176 bytes), seq 1, pid 42
02 00 01 00   00 00 10 00   20 01 00 14   00 00 00 00 // sadb_sa: spi 0x1000 (BE), replay 32, MATURE, auth 0, AES-GCM-16 (20)
03 00 05 00   00 20 00 00                             // sadb_address src: proto 0, prefixlen 32
02 00 00 00   0a 00 00 01   00 00 00 00   00 00 00 00 //   sockaddr_in 10.0.0.1
03 00 06 00   00 20 00 00                             // sadb_address dst
02 00 00 00   c0 00 02 01   00 00 00 00   00 00 00 00 //   sockaddr_in 192.0.2.1
04 00 09 00   a0 00 00 00                             // sadb_key encrypt: len 4 (8+20 -> 32), bits 160
00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff ca fe ba be   00 00 00 00
02 00 13 00   02 00 00 00   00 00 00 00   05 00 00 00 // sadb_x_sa2: mode TUNNEL, sequence 0, reqid 5
01 00 14 00   02 00 00 00                             // sadb_x_nat_t_type: len 1, ext 20, UDP_ENCAP_ESPINUDP (2)
01 00 15 00   11 94 00 00                             // sadb_x_nat_t_port sport: ext 21, 4500 (BE)
01 00 16 00   11 94 00 00                             // sadb_x_nat_t_port dport: ext 22, 4500 (BE)
03 00 17 00   00 20 00 00                             // sadb_address NAT_T_OA: ext 23, prefixlen 32
02 00 00 00   c6 33 64 07   00 00 00 00   00 00 00 00 //   sockaddr_in 198.51.100.7
`

func TestNATTHandDerivedAdd(t *testing.T) {
	if !littleEndian() {
		t.Skip("bytes derived for a little-endian host")
	}
	want := unhex(t, nattAddBytes)
	c := nattConfig(nattUs, nattPeer)
	m, err := SAMsg(&c, true)
	if err != nil {
		t.Fatal(err)
	}
	m.Type, m.Seq, m.PID = MsgAdd, 1, 42
	if got := m.MustEncode(); !bytes.Equal(got, want) {
		t.Fatalf("encode:\n got %x\nwant %x", got, want)
	}
	d, err := DecodeRequest(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ConfigFromMsg(d)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("decoded config\n%+v\nwant\n%+v", got, c)
	}
}

// TestNATTRoundTrip: every UDP encapsulation the Go API can express and
// PF_KEY carries comes back from SAMsg -> Encode -> Decode -> ConfigFromMsg
// unchanged (the keepalive interval has no PF_KEY form and is not sent).
func TestNATTRoundTrip(t *testing.T) {
	v6 := nattConfig(a6, b6)
	v6.Encap = xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 4500, DPort: 61234, OA: netip.MustParseAddr("2001:db8:ffff::7")}
	noOA := nattConfig(nattUs, nattPeer)
	noOA.Encap.OA = netip.Addr{}
	transport := nattConfig(nattUs, nattPeer)
	transport.Mode = xfrm.ModeTransport
	transport.Encap.SPort = 1
	transport.Encap.DPort = 65535
	for name, c := range map[string]xfrm.SAConfig{"v4 tunnel": nattConfig(nattUs, nattPeer), "v6": v6, "no OA": noOA, "transport": transport} {
		m, err := SAMsg(&c, true)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		m.Type = MsgAdd
		d, err := DecodeRequest(m.MustEncode())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := ConfigFromMsg(d)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, got, c)
		}
	}
	// An unspecified original address (Linux's `encap espinudp 4500 4500
	// 0.0.0.0`) is no original address.
	c := nattConfig(nattUs, nattPeer)
	m, _ := SAMsg(&c, true)
	m.NATTOA = hostAddr(netip.IPv4Unspecified(), 0)
	got, err := ConfigFromMsg(m)
	if err != nil || got.Encap.OA.IsValid() {
		t.Fatalf("0.0.0.0 OA: %v %v", got.Encap.OA, err)
	}
}

// TestNATTRefused: what ConfigFromMsg refuses, each with EINVAL (the SA
// would otherwise be unencapsulated, or encapsulated in a way the data
// plane does not speak).
func TestNATTRefused(t *testing.T) {
	base := func() *Msg {
		c := nattConfig(nattUs, nattPeer)
		m, err := SAMsg(&c, true)
		if err != nil {
			t.Fatal(err)
		}
		m.Type = MsgAdd
		return m
	}
	ah := func() *Msg {
		c := xfrm.SAConfig{Proto: xfrm.ProtoAH, SPI: 0x2000, Src: nattUs, Dst: nattPeer, Auth: xfrm.Algorithm{Name: "hmac-sha256", Key: make([]byte, 32)}}
		m, err := SAMsg(&c, true)
		if err != nil {
			t.Fatal(err)
		}
		b := base()
		m.Type = MsgAdd
		m.NATTType, m.NATTSport, m.NATTDport = b.NATTType, b.NATTSport, b.NATTDport
		return m
	}
	ipcomp := func() *Msg {
		b := base()
		return &Msg{Type: MsgAdd, SAType: SATypeIPComp, SA: &SA{SPI: 0x4000, Encrypt: CAlgDeflate}, Src: b.Src, Dst: b.Dst,
			NATTType: b.NATTType, NATTSport: b.NATTSport, NATTDport: b.NATTDport}
	}
	cases := []struct {
		name string
		edit func(m *Msg) *Msg
	}{
		{"type 1 (ESPINUDP_NON_IKE)", func(m *Msg) *Msg { m.NATTType.Type = 1; return m }},
		{"type 0", func(m *Msg) *Msg { m.NATTType.Type = 0; return m }},
		{"type 7 (TCP_ENCAP_ESPINTCP)", func(m *Msg) *Msg { m.NATTType.Type = 7; return m }},
		{"no source port", func(m *Msg) *Msg { m.NATTSport = nil; return m }},
		{"no destination port", func(m *Msg) *Msg { m.NATTDport = nil; return m }},
		{"source port 0", func(m *Msg) *Msg { m.NATTSport.Port = 0; return m }},
		{"destination port 0", func(m *Msg) *Msg { m.NATTDport.Port = 0; return m }},
		{"ports without a type", func(m *Msg) *Msg { m.NATTType = nil; m.NATTOA = nil; return m }},
		{"OA without a type", func(m *Msg) *Msg { m.NATTType, m.NATTSport, m.NATTDport = nil, nil, nil; return m }},
		{"OA of the other family", func(m *Msg) *Msg { m.NATTOA = hostAddr(b6, 0); return m }},
		{"AH", func(*Msg) *Msg { return ah() }},
		{"IPComp", func(*Msg) *Msg { return ipcomp() }},
	}
	for _, c := range cases {
		m := c.edit(base())
		d, err := DecodeRequest(m.MustEncode())
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if _, err := ConfigFromMsg(d); err == nil || errnoOf(err) != syscall.EINVAL {
			t.Errorf("%s: %v, want EINVAL", c.name, err)
		}
	}
	// SAMsg refuses what PF_KEY cannot say either.
	bad := xfrm.SAConfig{Proto: xfrm.ProtoAH, SPI: 0x2000, Src: nattUs, Dst: nattPeer, Auth: xfrm.Algorithm{Name: "hmac-sha256", Key: make([]byte, 32)},
		Encap: xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 4500, DPort: 4500}}
	if _, err := SAMsg(&bad, true); err == nil {
		t.Error("SAMsg of an encapsulated AH SA succeeded")
	}
}

// TestNATTServerAddGetDump: ADD carries the NAT-T extensions into the SA;
// the ADD broadcast, GET and DUMP report them as __pfkey_xfrm_state2msg
// does (type, sport, dport after SA2); EXPIRE, built from the same state,
// too.
func TestNATTServerAddGetDump(t *testing.T) {
	e, s := newServer(t)
	var snk sink
	k := s.Open(snk.send)
	defer k.Close()
	c := nattConfig(nattUs, nattPeer)
	add, _ := SAMsg(&c, true)
	add.Type = MsgAdd
	check := func(what string, r *Msg) {
		t.Helper()
		if r.Errno != 0 {
			t.Fatalf("%s: errno %d", what, r.Errno)
		}
		if r.NATTType == nil || r.NATTType.Type != 2 || r.NATTSport == nil || r.NATTSport.Port != 4500 ||
			r.NATTDport == nil || r.NATTDport.Port != 4500 || r.NATTOA == nil || r.NATTOA.Addr != nattOA {
			t.Fatalf("%s: NAT-T extensions %+v %+v %+v %+v", what, r.NATTType, r.NATTSport, r.NATTDport, r.NATTOA)
		}
	}
	check("ADD", one(t, k, &snk, add))
	sa := e.SAD.Lookup(nattPeer, xfrm.ProtoESP, 0x1000)
	if sa == nil || sa.Config.Encap != c.Encap {
		t.Fatalf("SA in the SAD: %+v", sa)
	}
	check("GET", one(t, k, &snk, &Msg{Type: MsgGet, SAType: SATypeESP, SA: &SA{SPI: 0x1000}, Src: hostAddr(nattUs, 0), Dst: hostAddr(nattPeer, 0)}))
	check("DUMP", one(t, k, &snk, &Msg{Type: MsgDump, SAType: SATypeESP}))
	check("EXPIRE", ExpireMsg(sa, false))
	// A plain SA has none.
	r := one(t, k, &snk, addMsg(0x1001))
	if r.NATTType != nil || r.NATTSport != nil || r.NATTDport != nil || r.NATTOA != nil {
		t.Fatalf("plain SA reports NAT-T: %+v", r)
	}
}

// newMappingBytes is the SADB_X_NAT_T_NEW_MAPPING Linux's
// pfkey_send_new_mapping (net/key/af_key.c) builds for the inbound SA
// 192.0.2.1 -> 10.0.0.1 spi 0x1000 (encap sport 4500) whose peer now
// sends from 203.0.113.9:61234: HDR | SA (only the SPI) | ADDRESS_SRC
// (the SA's source, port 0) | NAT_T_SPORT (the old port) | ADDRESS_DST
// (the new address, port 0) | NAT_T_DPORT (the new port), derived by hand
// from pfkeyv2.h for a little-endian host.
const newMappingBytes = `
02 17 00 03   0c 00 00 00   00 00 00 00   00 00 00 00 // sadb_msg: v2, X_NAT_T_NEW_MAPPING (23), SATYPE_ESP, len 12 (96), seq 0, pid 0
02 00 01 00   00 00 10 00   00 00 00 00   00 00 00 00 // sadb_sa: spi 0x1000; replay, state, auth, encrypt, flags 0
03 00 05 00   00 20 00 00                             // sadb_address src: proto 0, prefixlen 32
02 00 00 00   c0 00 02 01   00 00 00 00   00 00 00 00 //   sockaddr_in 192.0.2.1 port 0
01 00 15 00   11 94 00 00                             // sadb_x_nat_t_port sport: 4500 (the SA's encap_sport)
03 00 06 00   00 20 00 00                             // sadb_address dst
02 00 00 00   cb 00 71 09   00 00 00 00   00 00 00 00 //   sockaddr_in 203.0.113.9 port 0
01 00 16 00   ef 32 00 00                             // sadb_x_nat_t_port dport: 61234 (the new port)
`

func TestNewMappingMsgBytes(t *testing.T) {
	if !littleEndian() {
		t.Skip("bytes derived for a little-endian host")
	}
	sa, err := xfrm.NewSA(nattConfig(nattPeer, nattUs))
	if err != nil {
		t.Fatal(err)
	}
	defer xfrm.DiscardSA(sa)
	m, err := NewMappingMsg(sa, netip.MustParseAddr("203.0.113.9"), 61234)
	if err != nil {
		t.Fatal(err)
	}
	want := unhex(t, newMappingBytes)
	if got := m.MustEncode(); !bytes.Equal(got, want) {
		t.Fatalf("encode:\n got %x\nwant %x", got, want)
	}
	if d, err := Decode(want); err != nil || !reflect.DeepEqual(d.Order, m.Order) {
		t.Fatalf("decode: %v %+v", err, d)
	}
}

func TestServerNewMapping(t *testing.T) {
	_, s := newServer(t)
	var reg, plain sink
	kr := s.Open(reg.send)
	defer kr.Close()
	kp := s.Open(plain.send)
	defer kp.Close()
	if r := one(t, kr, &reg, &Msg{Type: MsgRegister, SAType: SATypeESP}); r.Errno != 0 {
		t.Fatal(r.Errno)
	}
	plain.take(t) // the REGISTER broadcast goes to registered sockets only; nothing here
	sa, err := xfrm.NewSA(nattConfig(nattPeer, nattUs))
	if err != nil {
		t.Fatal(err)
	}
	defer xfrm.DiscardSA(sa)
	newAddr := netip.MustParseAddr("203.0.113.9")
	if err := s.NewMapping(sa, newAddr, 61234); err != nil {
		t.Fatal(err)
	}
	rs := reg.take(t)
	if len(rs) != 1 || rs[0].Type != MsgXNATTNewMap || rs[0].Src.Addr != nattPeer || rs[0].Dst.Addr != newAddr ||
		rs[0].NATTSport.Port != 4500 || rs[0].NATTDport.Port != 61234 || rs[0].SA.SPI != 0x1000 {
		t.Fatalf("registered socket got %+v", rs)
	}
	if rs := plain.take(t); len(rs) != 0 {
		t.Fatalf("unregistered socket got %+v", rs)
	}
	// Not encapsulated, or another family: EINVAL, nothing sent.
	c := nattConfig(nattPeer, nattUs)
	c.Encap = xfrm.Encap{}
	p, err := xfrm.NewSA(c)
	if err != nil {
		t.Fatal(err)
	}
	defer xfrm.DiscardSA(p)
	if err := s.NewMapping(p, newAddr, 4500); errnoOf(err) != syscall.EINVAL {
		t.Errorf("plain SA: %v", err)
	}
	if err := s.NewMapping(sa, b6, 4500); errnoOf(err) != syscall.EINVAL {
		t.Errorf("IPv6 address for an IPv4 SA: %v", err)
	}
	if rs := reg.take(t); len(rs) != 0 {
		t.Fatalf("sent %+v", rs)
	}
}

// TestUpdateEncapChangeRefused: an SADB_UPDATE of a mature SA that
// changes its UDP encapsulation (add or drop NAT-T, other ports, another
// original address) is EINVAL and changes nothing, as for keys and mode:
// UPDATE of a mature SA takes lifetimes only (xfrm.SAD.Update), and the
// encapsulation used to be dropped silently with errno 0. An UPDATE that
// repeats the encapsulation is accepted.
func TestUpdateEncapChangeRefused(t *testing.T) {
	e, s := newServer(t)
	var snk sink
	k := s.Open(snk.send)
	defer k.Close()
	c := nattConfig(nattUs, nattPeer)
	msg := func(edit func(*xfrm.Encap)) *Msg {
		cc := c
		edit(&cc.Encap)
		m, err := SAMsg(&cc, true)
		if err != nil {
			t.Fatal(err)
		}
		m.Type = MsgUpdate
		return m
	}
	add := msg(func(*xfrm.Encap) {})
	add.Type = MsgAdd
	if r := one(t, k, &snk, add); r.Errno != 0 {
		t.Fatalf("add errno %d", r.Errno)
	}
	for name, edit := range map[string]func(*xfrm.Encap){
		"destination port": func(x *xfrm.Encap) { x.DPort = 61234 },
		"source port":      func(x *xfrm.Encap) { x.SPort = 4501 },
		"original address": func(x *xfrm.Encap) { x.OA = nattPeer },
		"no encapsulation": func(x *xfrm.Encap) { *x = xfrm.Encap{} },
	} {
		if r := one(t, k, &snk, msg(edit)); r.Errno != uint8(syscall.EINVAL) {
			t.Errorf("UPDATE changing the %s: errno %d, want EINVAL", name, r.Errno)
		}
	}
	if sa := e.SAD.Lookup(nattPeer, xfrm.ProtoESP, 0x1000); sa == nil || sa.Config.Encap != c.Encap {
		t.Fatalf("SA after refused UPDATEs: %+v", sa)
	}
	if r := one(t, k, &snk, msg(func(*xfrm.Encap) {})); r.Errno != 0 {
		t.Fatalf("UPDATE repeating the encapsulation: errno %d", r.Errno)
	}
	// A plain SA cannot gain an encapsulation by UPDATE either.
	if r := one(t, k, &snk, addMsg(0x2000)); r.Errno != 0 {
		t.Fatal(r.Errno)
	}
	up := addMsg(0x2000)
	up.Type = MsgUpdate
	up.NATTType, up.NATTSport, up.NATTDport = &NATTType{Type: 2}, &NATTPort{Port: 4500}, &NATTPort{Port: 4500}
	if r := one(t, k, &snk, up); r.Errno != uint8(syscall.EINVAL) {
		t.Errorf("UPDATE adding NAT-T to a plain SA: errno %d, want EINVAL", r.Errno)
	}
}
