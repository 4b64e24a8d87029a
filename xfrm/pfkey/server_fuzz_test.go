package pfkey

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// fuzzState is the one server FuzzServer drives across all its inputs, so
// that a sequence of inputs meets the state earlier ones left (larval SAs,
// registrations, promiscuous sockets, pending ACQUIREs and EXPIREs).
var fuzzState struct {
	once sync.Once
	e    *xfrm.Engine
	s    *Server
	k    [2]*Socket
	out  sink
}

func fuzzServer() *Server {
	fuzzState.once.Do(func() {
		e := xfrm.NewEngine()
		e.SAD.SetLarvalTimeout(200e6) // 200 ms: larval expiry happens during a run
		fuzzState.e, fuzzState.s = e, NewServer(e)
		for i := range fuzzState.k {
			fuzzState.k[i] = fuzzState.s.Open(fuzzState.out.send)
		}
	})
	return fuzzState.s
}

// splitMessages cuts an input into PF_KEY messages by their
// sadb_msg_len; when a length does not fit, the rest is one message.
func splitMessages(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 && len(out) < 64 {
		n := len(b)
		if len(b) >= msgLen {
			if l := int(binary.NativeEndian.Uint16(b[4:])) * 8; l >= msgLen && l <= len(b) {
				n = l
			}
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

func encodeAll(ms ...*Msg) []byte {
	var b []byte
	for _, m := range ms {
		b = append(b, m.MustEncode()...)
	}
	return b
}

// serverSeeds are message sequences covering every message type, valid
// and not: the SA life cycle, GETSPI/UPDATE, the policy operations, the
// IPComp GETSPI ranges that once divided by zero, and the codec's corpus.
func serverSeeds() map[string][]byte {
	sa := func(typ uint8, spi uint32) *Msg {
		m := updateMsg(typ, spi, 1, xfrm.Lifetime{Packets: 5}, xfrm.Lifetime{Bytes: 1 << 20})
		return m
	}
	ah := func() *Msg {
		c := xfrm.SAConfig{Proto: xfrm.ProtoAH, SPI: 0x3000, Src: a4, Dst: b4, Auth: xfrm.Algorithm{Name: "hmac(sha256)", Key: make([]byte, 32)}}
		m, err := SAMsg(&c, true)
		if err != nil {
			panic(err)
		}
		m.Type = MsgAdd
		return m
	}
	ipcomp := &Msg{Type: MsgAdd, SAType: SATypeIPComp, SA: &SA{SPI: 0x4000, State: SAStateMature, Encrypt: CAlgDeflate}, Src: hostAddr(a4, 0), Dst: hostAddr(b4, 0)}
	id := func(typ uint8, spi uint32) *Msg {
		return &Msg{Type: typ, SAType: SATypeESP, SA: &SA{SPI: spi}, Src: hostAddr(a4, 0), Dst: hostAddr(b4, 0)}
	}
	expire := id(MsgExpire, 0x2000)
	expire.LifetimeSoft = &Lifetime{}
	getspi := func(satype uint8, r *SPIRange) *Msg {
		return &Msg{Type: MsgGetSPI, SAType: satype, Src: hostAddr(a4, 0), Dst: hostAddr(b4, 0), SPIRange: r}
	}
	spdGet := func(typ uint8, id uint32) *Msg {
		return &Msg{Type: typ, Policy: &Policy{Type: PolicyIPsec, Dir: DirOutbound, ID: id}}
	}
	seeds := map[string][]byte{
		"sa-life-cycle": encodeAll(
			&Msg{Type: MsgRegister, SAType: SATypeESP, Seq: 1}, sa(MsgAdd, 0x1000), id(MsgGet, 0x1000),
			sa(MsgUpdate, 0x1000), &Msg{Type: MsgDump, SAType: SATypeUnspec}, id(MsgDelete, 0x1000),
			&Msg{Type: MsgFlush, SAType: SATypeUnspec}),
		"getspi-update-expire": encodeAll(
			getspi(SATypeESP, &SPIRange{Min: 0x2000, Max: 0x2000}), sa(MsgUpdate, 0x2000), expire, id(MsgGet, 0x2000),
			&Msg{Type: MsgAcquire, SAType: SATypeESP, Errno: 22}),
		"getspi-ipcomp-ranges": encodeAll(
			getspi(SATypeIPComp, &SPIRange{Min: 0, Max: 0xffffffff}), getspi(SATypeIPComp, nil),
			getspi(SATypeIPComp, &SPIRange{Min: 0x100, Max: 0x1ff}), getspi(SATypeAH, &SPIRange{Min: 0, Max: 0xffffffff})),
		"policies": encodeAll(
			spdMsg(MsgXSPDAdd), spdMsg(MsgXSPDUpdate), &Msg{Type: MsgXSPDDump}, spdGet(MsgXSPDGet, 1),
			spdMsg(MsgXSPDDelete), spdGet(MsgXSPDDelete2, 9), &Msg{Type: MsgXSPDFlush}),
		"promisc-and-protocols": encodeAll(
			&Msg{Type: MsgXPromisc, SAType: 1}, &Msg{Type: MsgRegister, SAType: SATypeUnspec}, ah(), ipcomp,
			&Msg{Type: MsgDump, SAType: SATypeUnspec}, &Msg{Type: MsgXPromisc, SAType: 0}),
		"full": Full().MustEncode(),
		"nat-t": encodeAll(nattSeed(MsgAdd, 0x5000, nil), id(MsgGet, 0x5000), nattSeed(MsgUpdate, 0x5000, nil),
			nattSeed(MsgUpdate, 0x5000, func(m *Msg) { m.NATTDport.Port = 61234 }),
			nattSeed(MsgAdd, 0x5001, func(m *Msg) { m.NATTType.Type = 1 }),
			nattSeed(MsgAdd, 0x5002, func(m *Msg) { m.NATTSport = nil }),
			nattSeed(MsgAdd, 0x5003, func(m *Msg) { m.NATTType = nil }),
			nattSeed(MsgAdd, 0x5004, func(m *Msg) { m.NATTOA = hostAddr(a6, 0) }),
			&Msg{Type: MsgXNATTNewMap, SAType: SATypeESP, SA: &SA{SPI: 0x5000}, Src: hostAddr(a4, 0), Dst: hostAddr(b4, 0),
				NATTSport: &NATTPort{Port: 4500}, NATTDport: &NATTPort{Port: 4500}},
			&Msg{Type: MsgDump, SAType: SATypeESP}),
	}
	// Every message type as a bare header, and with the full set of
	// extensions.
	var bare, full []byte
	for typ := uint8(1); typ <= MsgMax; typ++ {
		bare = append(bare, (&Msg{Type: typ, SAType: SATypeESP, Seq: uint32(typ)}).MustEncode()...)
		m := Full()
		m.Type = typ
		full = append(full, m.MustEncode()...)
	}
	seeds["every-type-bare"] = bare
	seeds["every-type-full"] = full
	for i, c := range Malformed() {
		if len(c.Msg) > 0 && len(c.Msg) < 4096 {
			seeds[fmt.Sprintf("malformed-%02d", i)] = c.Msg
		}
	}
	return seeds
}

// nattSeed is an ADD or UPDATE of a UDP-encapsulated ESP SA a4->b4,
// edited by edit (nil: as built).
func nattSeed(typ uint8, spi uint32, edit func(*Msg)) *Msg {
	c := xfrm.SAConfig{Proto: xfrm.ProtoESP, SPI: spi, Src: a4, Dst: b4, ReplayWindow: 32,
		AEAD:  xfrm.Algorithm{Name: "aes-gcm-16", Key: make([]byte, 20)},
		Encap: xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 4500, DPort: 4500, OA: a4}}
	m, err := SAMsg(&c, true)
	if err != nil {
		panic(err)
	}
	m.Type = typ
	if edit != nil {
		edit(m)
	}
	return m
}

// FuzzServer (control-plane "Must show"): sequences of PF_KEY messages,
// valid and not, against one long-lived server. No message may make a
// handler panic (the messages go to the handler under the panic guard's
// skin, so a panic fails here with its stack), and everything the server
// sends must decode.
func FuzzServer(f *testing.F) {
	for _, s := range serverSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		s := fuzzServer()
		for i, m := range splitMessages(in) {
			fuzzState.k[i%2].handle(bytes.Clone(m))
		}
		fuzzState.out.take(t)
		if s.Stats.HandlerPanics.Load() != 0 {
			t.Fatal("a handler panicked")
		}
		// Bound the state a long run accumulates.
		if e := fuzzState.e; e.SAD.Len() > 1000 || e.SPD.Len() > 1000 {
			e.SAD.Flush(0)
			e.SPD.Flush()
		}
	})
}

var writeCorpus = flag.Bool("pfkey.writecorpus", false, "write FuzzServer's seeds to testdata/fuzz/FuzzServer")

// TestServerFuzzCorpus checks that every seed is checked in as a corpus
// file next to what fuzzing found, so that the suite replays them with
// the rest; -pfkey.writecorpus (go test -run TestServerFuzzCorpus
// ./xfrm/pfkey -args -pfkey.writecorpus) writes them.
func TestServerFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzServer")
	if *writeCorpus {
		os.MkdirAll(dir, 0o755)
	}
	for name, b := range serverSeeds() {
		data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		file := filepath.Join(dir, "seed-"+name)
		if *writeCorpus {
			if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if got, err := os.ReadFile(file); err != nil || string(got) != data {
			t.Errorf("corpus file %s is missing or stale (run with -pfkey.writecorpus): %v", file, err)
		}
	}
}
