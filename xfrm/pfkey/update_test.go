package pfkey

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"syscall"
	"testing"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// udp4 is an IPv4 UDP datagram from src to dst carrying payload (checksum
// left 0, which IPv4 allows).
func udp4(src, dst netip.Addr, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, 17
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[20:], 4000)
	binary.BigEndian.PutUint16(p[22:], 5000)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}

// updateMsg is an ADD or UPDATE of ESP SA spi a4->b4 with AES-GCM under
// key byte k and the given lifetimes.
func updateMsg(typ uint8, spi uint32, k byte, soft, hard xfrm.Lifetime) *Msg {
	c := xfrm.SAConfig{Proto: xfrm.ProtoESP, SPI: spi, Src: a4, Dst: b4,
		AEAD: xfrm.Algorithm{Name: "aes-gcm-16", Key: bytes.Repeat([]byte{k}, 20)}, ReplayWindow: 32,
		Soft: soft, Hard: hard}
	m, err := SAMsg(&c, true)
	if err != nil {
		panic(err)
	}
	m.Type = typ
	return m
}

// TestUpdateMatureSAInPlace (hardening finding 1, second half): SADB_UPDATE
// of a mature SA changes its lifetimes in place, as Linux's
// xfrm_state_update and RFC 2367 §3.1.2 do. The SA is the same object
// after it: the outbound counter keeps counting (no sequence number, and
// so no nonce, is used twice), a packet accepted before is still a replay,
// and the lifetime counters keep what was used. An UPDATE that would
// change keys or algorithms is refused with EINVAL and changes nothing.
func TestUpdateMatureSAInPlace(t *testing.T) {
	e, s := newServer(t)
	var snk sink
	k := s.Open(snk.send)
	defer k.Close()
	const spi = 0x4242
	soft1, hard1 := xfrm.Lifetime{Packets: 100}, xfrm.Lifetime{Bytes: 1 << 20}
	if r := one(t, k, &snk, updateMsg(MsgAdd, spi, 7, soft1, hard1)); r.Errno != 0 {
		t.Fatalf("add errno %d", r.Errno)
	}
	// The engine both sends on the SA (outbound policy a4->b4) and
	// receives on it (the SA's destination is b4): one SA, its outbound
	// counter and its inbound replay window.
	sel := xfrm.Selector{Src: netip.PrefixFrom(a4, 32), Dst: netip.PrefixFrom(b4, 32)}
	if _, err := e.AddPolicy(&xfrm.Policy{Dir: xfrm.DirOut, Sel: sel, Action: xfrm.ActionProtect,
		Templates: []xfrm.Template{{Proto: xfrm.ProtoESP, Mode: xfrm.ModeTransport, Level: xfrm.LevelRequire}}}); err != nil {
		t.Fatal(err)
	}
	send := func() []byte {
		t.Helper()
		v, out := e.Output(udp4(a4, b4, []byte("hello")), xfrm.HeapAllocator{})
		if v != xfrm.VerdictProtected {
			t.Fatalf("verdict %d", v)
		}
		return out
	}
	receive := func(pkt []byte) {
		b := bytes.Clone(pkt)
		e.Input(b[:20], xfrm.Proto(b[9]), b[20:], xfrm.HeapAllocator{})
	}
	var captured [][]byte
	for i := 0; i < 3; i++ {
		captured = append(captured, send())
	}
	receive(captured[1])
	if n := e.Stats.InStateSeqError.Load(); n != 0 {
		t.Fatalf("first delivery counted %d replays", n)
	}
	sa := e.SAD.Lookup(b4, xfrm.ProtoESP, spi)
	pkts := sa.Counters.Packets.Load()

	soft2, hard2 := xfrm.Lifetime{Packets: 200}, xfrm.Lifetime{Bytes: 2 << 20, AddSeconds: 3600}
	if r := one(t, k, &snk, updateMsg(MsgUpdate, spi, 7, soft2, hard2)); r.Errno != 0 {
		t.Fatalf("update errno %d", r.Errno)
	}
	if got := e.SAD.Lookup(b4, xfrm.ProtoESP, spi); got != sa {
		t.Fatal("UPDATE of a mature SA replaced it")
	}
	if sa.LastSeq() != 3 {
		t.Fatalf("outbound counter at %d after UPDATE, want 3", sa.LastSeq())
	}
	next := send()
	if seq := binary.BigEndian.Uint32(next[24:]); seq != 4 {
		t.Fatalf("first packet after UPDATE has sequence number %d, want 4", seq)
	}
	receive(captured[1])
	if n := e.Stats.InStateSeqError.Load(); n != 1 {
		t.Fatalf("captured packet replayed after UPDATE: XfrmInStateSeqError %d, want 1", n)
	}
	g := one(t, k, &snk, &Msg{Type: MsgGet, SAType: SATypeESP, SA: &SA{SPI: spi}, Dst: hostAddr(b4, 0)})
	if g.LifetimeHard == nil || g.LifetimeHard.Bytes != hard2.Bytes || g.LifetimeHard.AddTime != hard2.AddSeconds ||
		g.LifetimeSoft == nil || g.LifetimeSoft.Allocations != uint32(soft2.Packets) {
		t.Fatalf("lifetimes after UPDATE: hard %+v soft %+v", g.LifetimeHard, g.LifetimeSoft)
	}
	if g.LifetimeCurrent == nil || uint64(g.LifetimeCurrent.Allocations) < pkts+1 {
		t.Fatalf("lifetime counters reset by UPDATE: %+v, had %d packets", g.LifetimeCurrent, pkts)
	}

	// Changing what the peer agreed to needs a new SA: EINVAL, and the
	// SA keeps its key and lifetimes.
	other := updateMsg(MsgUpdate, spi, 8, soft1, hard1)
	cbc := updateMsg(MsgUpdate, spi, 7, soft1, hard1)
	cbc.SA.Encrypt, cbc.KeyEncrypt = EAlgAESCBC, &Key{Bits: 128, Data: bytes.Repeat([]byte{7}, 16)}
	cbc.SA.Auth, cbc.KeyAuth = AAlgSHA256HMAC, &Key{Bits: 256, Data: bytes.Repeat([]byte{7}, 32)}
	tunnel := updateMsg(MsgUpdate, spi, 7, soft1, hard1)
	tunnel.SA2.Mode = ModeTunnel
	for name, m := range map[string]*Msg{"key": other, "algorithm": cbc, "mode": tunnel} {
		if r := one(t, k, &snk, m); r.Errno != uint8(syscall.EINVAL) {
			t.Fatalf("UPDATE changing the %s: errno %d, want EINVAL", name, r.Errno)
		}
	}
	g = one(t, k, &snk, &Msg{Type: MsgGet, SAType: SATypeESP, SA: &SA{SPI: spi}, Dst: hostAddr(b4, 0)})
	if !bytes.Equal(g.KeyEncrypt.Data, bytes.Repeat([]byte{7}, 20)) || g.LifetimeHard.Bytes != hard2.Bytes {
		t.Fatal("a refused UPDATE changed the SA")
	}
}

// TestUpdateRevivesDyingSA: an UPDATE that raises the soft limit of a
// dying SA makes it mature again (Linux clears km.dying), so it is
// preferred for output and its next soft expiry is reported.
func TestUpdateRevivesDyingSA(t *testing.T) {
	e, s := newServer(t)
	var snk sink
	k := s.Open(snk.send)
	defer k.Close()
	const spi = 0x4343
	one(t, k, &snk, updateMsg(MsgAdd, spi, 7, xfrm.Lifetime{Packets: 1}, xfrm.Lifetime{}))
	sa := e.SAD.Lookup(b4, xfrm.ProtoESP, spi)
	xfrm.ExpireSA(sa, false)
	if sa.State() != xfrm.StateDying {
		t.Fatalf("state %v after soft expiry", sa.State())
	}
	if r := one(t, k, &snk, updateMsg(MsgUpdate, spi, 7, xfrm.Lifetime{Packets: 1000}, xfrm.Lifetime{})); r.Errno != 0 {
		t.Fatalf("update errno %d", r.Errno)
	}
	if sa.State() != xfrm.StateMature {
		t.Fatalf("state %v after UPDATE with a higher soft limit, want mature", sa.State())
	}
}
