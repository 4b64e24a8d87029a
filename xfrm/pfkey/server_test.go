package pfkey

import (
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

type sink struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (s *sink) send(b []byte) {
	s.mu.Lock()
	s.msgs = append(s.msgs, b)
	s.mu.Unlock()
}

func (s *sink) take(t *testing.T) []*Msg {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Msg
	for _, b := range s.msgs {
		m, err := Decode(b)
		if err != nil && len(b) == msgLen && b[2] != 0 {
			// The error reply to a message whose own header is bad
			// (no type, or an unknown one) echoes that header.
			m, err = &Msg{Version: b[0], Type: b[1], Errno: b[2]}, nil
		}
		if err != nil {
			t.Fatalf("server sent an undecodable message: %v", err)
		}
		out = append(out, m)
	}
	s.msgs = nil
	return out
}

func newServer(t *testing.T) (*xfrm.Engine, *Server) {
	e := xfrm.NewEngine()
	s := NewServer(e)
	t.Cleanup(func() { s.Close(); e.Close() })
	return e, s
}

// one sends m and returns the single reply to k.
func one(t *testing.T, k *Socket, snk *sink, m *Msg) *Msg {
	t.Helper()
	k.Handle(m.MustEncode())
	rs := snk.take(t)
	if len(rs) != 1 {
		t.Fatalf("%s: %d replies", MsgName(m.Type), len(rs))
	}
	return rs[0]
}

func addMsg(spi uint32) *Msg {
	c := xfrm.SAConfig{Proto: xfrm.ProtoESP, SPI: spi, Src: a4, Dst: b4,
		AEAD: xfrm.Algorithm{Name: "aes-gcm-16", Key: make([]byte, 20)}, ReplayWindow: 32,
		Hard: xfrm.Lifetime{Bytes: 1000}, Soft: xfrm.Lifetime{Packets: 3}}
	m, err := SAMsg(&c, true)
	if err != nil {
		panic(err)
	}
	m.Type = MsgAdd
	return m
}

func spdMsg(typ uint8) *Msg {
	p := &xfrm.Policy{Dir: xfrm.DirOut, Priority: 10, Action: xfrm.ActionProtect,
		Sel:       xfrm.Selector{Src: netip.MustParsePrefix("10.0.0.0/24"), Dst: netip.MustParsePrefix("10.0.1.0/24"), Proto: 6, DstPorts: xfrm.PortRange{Lo: 80, Hi: 80}},
		Templates: []xfrm.Template{{Proto: xfrm.ProtoESP, Mode: xfrm.ModeTunnel, Src: a4, Dst: b4, Level: xfrm.LevelRequire}}}
	m, _ := PolicyMsg(p)
	m.Type = typ
	return m
}

func TestServerOperations(t *testing.T) {
	e, s := newServer(t)
	var snk, other sink
	k := s.Open(snk.send)
	o := s.Open(other.send)
	defer k.Close()
	defer o.Close()

	// REGISTER: SUPPORTED from the algorithm table; twice is EEXIST.
	r := one(t, k, &snk, &Msg{Type: MsgRegister, SAType: SATypeESP, Seq: 1})
	if r.Errno != 0 || r.SupportedEncrypt == nil || r.SupportedAuth == nil || len(r.SupportedEncrypt.Algs) < 4 {
		t.Fatalf("register reply %+v", r)
	}
	if r = one(t, k, &snk, &Msg{Type: MsgRegister, SAType: SATypeESP, Seq: 2}); r.Errno != uint8(syscall.EEXIST) {
		t.Fatalf("second register: errno %d", r.Errno)
	}

	// ADD, broadcast to all; duplicate is EEXIST.
	r = one(t, k, &snk, addMsg(0x1000))
	if r.Errno != 0 || r.SA.SPI != 0x1000 || e.SAD.Len() != 1 || len(other.take(t)) != 1 {
		t.Fatalf("add: %+v", r)
	}
	if r = one(t, k, &snk, addMsg(0x1000)); r.Errno != uint8(syscall.EEXIST) {
		t.Fatalf("dup add errno %d", r.Errno)
	}
	// GET returns the keys; only to the asker.
	g := &Msg{Type: MsgGet, SAType: SATypeESP, SA: &SA{SPI: 0x1000}, Dst: hostAddr(b4, 0)}
	r = one(t, k, &snk, g)
	if r.KeyEncrypt == nil || r.KeyEncrypt.Bits != 160 || r.SA.Encrypt != EAlgAESGCM16 || r.LifetimeCurrent == nil || len(other.take(t)) != 0 {
		t.Fatalf("get %+v", r)
	}
	// UPDATE of a missing SA is ESRCH.
	u := addMsg(0x2000)
	u.Type = MsgUpdate
	if r = one(t, k, &snk, u); r.Errno != uint8(syscall.ESRCH) {
		t.Fatalf("update errno %d", r.Errno)
	}
	// DUMP: seq counts down to 0.
	one(t, k, &snk, addMsg(0x1001))
	other.take(t)
	k.Handle((&Msg{Type: MsgDump, SAType: SATypeESP, Seq: 9}).MustEncode())
	ds := snk.take(t)
	if len(ds) != 2 || ds[1].Seq != 0 || ds[0].Seq != 1 {
		t.Fatalf("dump %d", len(ds))
	}
	// DELETE, then GET is ESRCH.
	g.Type = MsgDelete
	if r = one(t, k, &snk, g); r.Errno != 0 {
		t.Fatalf("delete errno %d", r.Errno)
	}
	g.Type = MsgGet
	if r = one(t, k, &snk, g); r.Errno != uint8(syscall.ESRCH) {
		t.Fatalf("get after delete errno %d", r.Errno)
	}
	// FLUSH empties; DUMP is then ENOENT.
	one(t, k, &snk, &Msg{Type: MsgFlush})
	if e.SAD.Len() != 0 {
		t.Fatal("flush left SAs")
	}
	if r = one(t, k, &snk, &Msg{Type: MsgDump}); r.Errno != uint8(syscall.ENOENT) {
		t.Fatalf("empty dump errno %d", r.Errno)
	}

	// SPD: add, duplicate, get, update, dump, delete, delete2, flush.
	r = one(t, k, &snk, spdMsg(MsgXSPDAdd))
	if r.Errno != 0 || r.Policy.ID == 0 || e.SPD.Len() != 1 {
		t.Fatalf("spdadd %+v", r)
	}
	id := r.Policy.ID
	if r = one(t, k, &snk, spdMsg(MsgXSPDAdd)); r.Errno != uint8(syscall.EEXIST) {
		t.Fatalf("dup spdadd errno %d", r.Errno)
	}
	if r = one(t, k, &snk, &Msg{Type: MsgXSPDGet, Policy: &Policy{ID: id}}); r.Errno != 0 || r.Policy.ID != id || len(r.Policy.Requests) != 1 {
		t.Fatalf("spdget %+v", r)
	}
	if r = one(t, k, &snk, spdMsg(MsgXSPDUpdate)); r.Errno != 0 || r.Policy.ID != id {
		t.Fatalf("spdupdate %+v", r)
	}
	if r = one(t, k, &snk, spdMsg(MsgXSPDDump)); r.Errno != 0 || r.Seq != 0 {
		t.Fatalf("spddump %+v", r)
	}
	if r = one(t, k, &snk, spdMsg(MsgXSPDDelete)); r.Errno != 0 || e.SPD.Len() != 0 {
		t.Fatalf("spddelete %+v", r)
	}
	if r = one(t, k, &snk, spdMsg(MsgXSPDDelete)); r.Errno != uint8(syscall.ENOENT) {
		t.Fatalf("spddelete missing errno %d", r.Errno)
	}
	r = one(t, k, &snk, spdMsg(MsgXSPDAdd))
	if r = one(t, k, &snk, &Msg{Type: MsgXSPDDelete2, Policy: &Policy{ID: r.Policy.ID}}); r.Errno != 0 || e.SPD.Len() != 0 {
		t.Fatalf("spddelete2 %+v", r)
	}
	one(t, k, &snk, spdMsg(MsgXSPDAdd))
	one(t, k, &snk, &Msg{Type: MsgXSPDFlush})
	if e.SPD.Len() != 0 {
		t.Fatal("spdflush")
	}
	// X_PROMISC: the promiscuous socket sees other sockets' requests.
	other.take(t)
	o.Handle((&Msg{Type: MsgXPromisc, SAType: 1}).MustEncode())
	if n := len(other.take(t)); n != 2 { // the ALL broadcast, plus the promiscuous copy (af_key does the same)
		t.Fatalf("promisc reply %d", n)
	}
	snk.take(t)
	k.Handle((&Msg{Type: MsgXSPDFlush, Seq: 77}).MustEncode())
	got := other.take(t)
	if len(got) < 2 || got[0].Seq != 77 {
		t.Fatalf("promisc socket got %d", len(got))
	}
	snk.take(t)
	if r = one(t, k, &snk, &Msg{Type: MsgXPChange}); r.Errno != uint8(syscall.EOPNOTSUPP) {
		t.Fatalf("unsupported type errno %d", r.Errno)
	}
}

func TestServerGetSPILarval(t *testing.T) {
	e, s := newServer(t)
	e.SAD.SetLarvalTimeout(400 * time.Millisecond)
	var snk sink
	k := s.Open(snk.send)
	one(t, k, &snk, &Msg{Type: MsgRegister, SAType: SATypeESP})
	r := one(t, k, &snk, &Msg{Type: MsgGetSPI, SAType: SATypeESP, Seq: 3, Src: hostAddr(a4, 0), Dst: hostAddr(b4, 0),
		SPIRange: &SPIRange{Min: 0x5000, Max: 0x5fff}})
	if r.Errno != 0 || r.SA.SPI < 0x5000 || r.SA.SPI > 0x5fff || r.SA.State != SAStateLarval || r.Seq != 3 {
		t.Fatalf("getspi %+v %+v", r, r.SA)
	}
	sa := e.SAD.Lookup(b4, xfrm.ProtoESP, r.SA.SPI)
	if sa == nil || sa.State() != xfrm.StateLarval || sa.Usable() {
		t.Fatal("no larval SA")
	}
	// Fixed SPI taken: ENOENT.
	if r2 := one(t, k, &snk, &Msg{Type: MsgGetSPI, SAType: SATypeESP, Src: hostAddr(a4, 0), Dst: hostAddr(b4, 0),
		SPIRange: &SPIRange{Min: r.SA.SPI, Max: r.SA.SPI}}); r2.Errno != uint8(syscall.ENOENT) {
		t.Fatalf("taken spi errno %d", r2.Errno)
	}
	// The larval SA times out with a hard EXPIRE to registered sockets.
	deadline := time.Now().Add(3 * time.Second)
	for e.SAD.Lookup(b4, xfrm.ProtoESP, r.SA.SPI) != nil {
		if time.Now().After(deadline) {
			t.Fatal("larval SA did not time out")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ms := snk.take(t)
	if len(ms) != 1 || ms[0].Type != MsgExpire || ms[0].LifetimeHard == nil || ms[0].SA.SPI != r.SA.SPI {
		t.Fatalf("expected a hard EXPIRE, got %d messages", len(ms))
	}
	// GETSPI then UPDATE makes it mature.
	r = one(t, k, &snk, &Msg{Type: MsgGetSPI, SAType: SATypeESP, Src: hostAddr(a4, 0), Dst: hostAddr(b4, 0)})
	u := addMsg(r.SA.SPI)
	u.Type = MsgUpdate
	if r2 := one(t, k, &snk, u); r2.Errno != 0 {
		t.Fatalf("update errno %d", r2.Errno)
	}
	if sa := e.SAD.Lookup(b4, xfrm.ProtoESP, r.SA.SPI); sa == nil || sa.State() != xfrm.StateMature {
		t.Fatal("not mature after UPDATE")
	}
}

func TestServerMalformedLeavesStateAlone(t *testing.T) {
	e, s := newServer(t)
	var snk sink
	k := s.Open(snk.send)
	one(t, k, &snk, addMsg(0x1000))
	one(t, k, &snk, spdMsg(MsgXSPDAdd))
	nsa, nsp := e.SAD.Len(), e.SPD.Len()

	bad := Malformed()
	// Semantically bad but well-formed requests.
	type semantic struct {
		name  string
		m     *Msg
		errno syscall.Errno
	}
	badKey := addMsg(0x3000)
	badKey.KeyEncrypt = &Key{Bits: 64, Data: make([]byte, 8)}
	noSA := addMsg(0x3001)
	noSA.SA = nil
	badAlg := addMsg(0x3002)
	badAlg.SA.Encrypt = 77
	mixed := addMsg(0x3003)
	mixed.Dst = hostAddr(b6, 0)
	natt := addMsg(0x3004)
	natt.NATTType = &NATTType{Type: 2} // and no ports
	badDir := spdMsg(MsgXSPDAdd)
	badDir.Policy.Dir = 9
	badType := spdMsg(MsgXSPDAdd)
	badType.Policy.Type = 7
	badReq := spdMsg(MsgXSPDAdd)
	badReq.Policy.Requests[0].Proto = 6
	badMode := spdMsg(MsgXSPDAdd)
	badMode.Policy.Requests[0].Mode = 3
	noAddr := spdMsg(MsgXSPDAdd)
	noAddr.Policy.Requests[0].Src, noAddr.Policy.Requests[0].Dst = nil, nil
	noReq := spdMsg(MsgXSPDAdd)
	noReq.Policy.Requests = nil
	noPol := spdMsg(MsgXSPDAdd)
	noPol.Policy = nil
	sems := []semantic{
		{"short key", badKey, syscall.EINVAL},
		{"no SA extension", noSA, syscall.EINVAL},
		{"unknown algorithm", badAlg, syscall.EINVAL},
		{"mixed families", mixed, syscall.EINVAL},
		{"nat-t without ports", natt, syscall.EINVAL},
		{"bad direction", badDir, syscall.EINVAL},
		{"bad policy type", badType, syscall.EINVAL},
		{"bad request proto", badReq, syscall.EINVAL},
		{"bad request mode", badMode, syscall.EINVAL},
		{"tunnel without addresses", noAddr, syscall.EINVAL},
		{"ipsec without requests", noReq, syscall.EINVAL},
		{"spdadd without policy", noPol, syscall.EINVAL},
		{"register satype 200", &Msg{Type: MsgRegister, SAType: 200}, syscall.EINVAL},
		{"flush satype 200", &Msg{Type: MsgFlush, SAType: 200}, syscall.EINVAL},
		{"promisc 2", &Msg{Type: MsgXPromisc, SAType: 2}, syscall.EINVAL},
		{"getspi inverted range", &Msg{Type: MsgGetSPI, SAType: SATypeESP, Src: hostAddr(a4, 0), Dst: hostAddr(b4, 0), SPIRange: &SPIRange{Min: 0x9000, Max: 0x8000}}, syscall.EINVAL},
		{"errno set in request", &Msg{Type: MsgFlush, Errno: 5}, syscall.EINVAL},
	}
	for _, c := range bad {
		k.Handle(c.Msg)
		rs := snk.take(t)
		if len(rs) != 1 || rs[0].Errno != uint8(c.Errno) {
			t.Errorf("%s: replies %d, errno %v want %d", c.Name, len(rs), rs, c.Errno)
		}
	}
	for _, c := range sems {
		r := one(t, k, &snk, c.m)
		if r.Errno != uint8(c.errno) {
			t.Errorf("%s: errno %d, want %d", c.name, r.Errno, c.errno)
		}
	}
	if e.SAD.Len() != nsa || e.SPD.Len() != nsp {
		t.Fatalf("state changed: SAD %d->%d SPD %d->%d", nsa, e.SAD.Len(), nsp, e.SPD.Len())
	}
}

func TestAcquireAndExpireMessages(t *testing.T) {
	e, s := newServer(t)
	var reg, unreg sink
	k := s.Open(reg.send)
	s.Open(unreg.send)
	one(t, k, &reg, &Msg{Type: MsgRegister, SAType: SATypeESP})
	unreg.take(t)
	pol := &xfrm.Policy{Dir: xfrm.DirOut, Priority: 5, Action: xfrm.ActionProtect,
		Templates: []xfrm.Template{{Proto: xfrm.ProtoESP, Mode: xfrm.ModeTransport, Level: xfrm.LevelRequire, ReqID: 4}}}
	id, err := e.AddPolicy(pol)
	if err != nil {
		t.Fatal(err)
	}
	// An IPv4 UDP packet a4 -> b4 with no SA: dropped, ACQUIRE sent.
	pkt := []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2, 0x30, 0x39, 0, 53, 0, 8, 0, 0}
	if v, _ := e.Output(pkt, xfrm.HeapAllocator{}); v != xfrm.VerdictDrop {
		t.Fatalf("verdict %v", v)
	}
	ms := reg.take(t)
	if len(ms) != 1 || ms[0].Type != MsgAcquire {
		t.Fatalf("got %d messages", len(ms))
	}
	a := ms[0]
	if a.Src.Addr != a4 || a.Dst.Addr != b4 || a.Policy.ID != id || a.Policy.Dir != DirOutbound || a.SA2.ReqID != 4 ||
		a.Proposal == nil || len(a.Proposal.Combs) == 0 || a.SAType != SATypeESP {
		t.Fatalf("acquire %+v", a)
	}
	if len(unreg.take(t)) != 0 {
		t.Fatal("unregistered socket got ACQUIRE")
	}
	// Rate limited: a second packet at once raises none.
	e.Output(pkt, xfrm.HeapAllocator{})
	if len(reg.take(t)) != 0 {
		t.Fatal("ACQUIRE not rate limited")
	}
	// An SA with a soft limit of 3 packets and a hard one of 1000 bytes.
	m := addMsg(0x7000)
	m.SA2.ReqID = 4
	one(t, k, &reg, m)
	for i := 0; i < 3; i++ {
		if v, _ := e.Output(pkt, xfrm.HeapAllocator{}); v != xfrm.VerdictProtected {
			t.Fatalf("packet %d: %v", i, v)
		}
	}
	ms = reg.take(t)
	if len(ms) != 1 || ms[0].Type != MsgExpire || ms[0].LifetimeSoft == nil || ms[0].SA.State != SAStateDying || ms[0].LifetimeCurrent.Allocations != 3 {
		t.Fatalf("soft expire: %d messages %+v", len(ms), ms)
	}
	for i := 0; i < 200 && e.SAD.Len() > 0; i++ {
		e.Output(pkt, xfrm.HeapAllocator{})
	}
	ms = reg.take(t)
	var hard *Msg
	for _, m := range ms {
		if m.Type == MsgExpire && m.LifetimeHard != nil {
			hard = m
		}
	}
	if hard == nil || hard.LifetimeHard.Bytes != 1000 || hard.LifetimeCurrent.Bytes <= 1000-8 {
		t.Fatalf("hard expire missing or wrong: %+v", hard)
	}
	if e.SAD.Len() != 0 {
		t.Fatal("hard-expired SA still present")
	}
}
