package control

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/pfkey"
	"github.com/ipsecstack/ipsecstack/xfrm/setkey"
)

func listen(t *testing.T, e *xfrm.Engine) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	s, err := Listen(path, e)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func dial(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	c.Timeout = 5 * time.Second
	t.Cleanup(func() { c.Close() })
	return c
}

// await reads messages until one decodes and satisfies ok.
func await(t *testing.T, c *Client, what string, ok func(*pfkey.Msg) bool) *pfkey.Msg {
	t.Helper()
	for {
		b, err := c.Recv()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		m, err := pfkey.Decode(b)
		if err != nil {
			if len(b) == 16 {
				m = &pfkey.Msg{Type: b[1], Errno: b[2]}
			} else {
				continue
			}
		}
		if ok(m) {
			return m
		}
	}
}

func call(t *testing.T, c *Client, m *pfkey.Msg) *pfkey.Msg {
	t.Helper()
	m.PID = 4242
	if err := c.Send(m.MustEncode()); err != nil {
		t.Fatal(err)
	}
	return await(t, c, pfkey.MsgName(m.Type), func(r *pfkey.Msg) bool { return r.Type == m.Type && (r.PID == 4242 || r.Errno != 0) })
}

func TestListenModeAndStale(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	s, path := listen(t, e)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	// A live socket is not replaced.
	if _, err := Listen(path, e); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Listen: %v", err)
	}
	// A regular file is not removed.
	reg := filepath.Join(t.TempDir(), "file")
	os.WriteFile(reg, nil, 0o600)
	if _, err := Listen(reg, e); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	// A stale socket (listener gone, file left) is replaced.
	s.ln.Close()
	s.Close()
	stale := filepath.Join(t.TempDir(), "stale.sock")
	fd, _ := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_SEQPACKET, 0)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: stale}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	s2, err := Listen(stale, e)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	s2.Close()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatal("Close left the socket file")
	}
}

func TestJSON(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	s, path := listen(t, e)
	s.HandleJSON("echo", func(req json.RawMessage) (any, error) {
		var r struct{ Text string }
		json.Unmarshal(req, &r)
		return map[string]string{"text": strings.ToUpper(r.Text)}, nil
	})
	c := dial(t, path)
	var v struct{ Version string }
	if err := c.Call("version", nil, &v); err != nil || v.Version == "" {
		t.Fatalf("version: %v %+v", err, v)
	}
	var r struct{ Text string }
	if err := c.Call("echo", map[string]string{"text": "hi"}, &r); err != nil || r.Text != "HI" {
		t.Fatalf("echo: %v %+v", err, r)
	}
	if err := c.Call("nope", nil, nil); err == nil || !strings.Contains(err.Error(), "unknown op") {
		t.Fatalf("unknown op: %v", err)
	}
	c.Send([]byte("{not json"))
	b, _ := c.Recv()
	if !bytes.Contains(b, []byte(`"ok":false`)) {
		t.Fatalf("bad json reply %s", b)
	}
}

func TestPFKeyOverSocketMalformed(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	_, path := listen(t, e)
	c := dial(t, path)
	st, _ := setkey.Parse("f", "add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233; spdadd 10.0.0.1 10.0.0.2 any -P out ipsec esp/transport//require;")
	if err := setkey.Execute(c, st, os.Stdout, "f"); err != nil {
		t.Fatal(err)
	}
	for _, m := range pfkey.Malformed() {
		if len(m.Msg) > 100000 || len(m.Msg) == 0 {
			continue // larger than the socket buffer; empty datagrams carry nothing
		}
		c.Send(m.Msg)
		b, err := c.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 16 || b[2] != uint8(m.Errno) {
			t.Errorf("%s: reply %x", m.Name, b)
		}
	}
	if e.SAD.Len() != 1 || e.SPD.Len() != 1 {
		t.Fatalf("malformed messages changed state: %d %d", e.SAD.Len(), e.SPD.Len())
	}
}

func TestSetkeyOverSocket(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	_, path := listen(t, e)
	c := dial(t, path)
	src, err := os.ReadFile("../xfrm/setkey/testdata/host-to-host.conf")
	if err != nil {
		t.Fatal(err)
	}
	st, err := setkey.Parse("host-to-host.conf", string(src))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := setkey.Execute(c, st, &out, "host-to-host.conf"); err != nil {
		t.Fatal(err)
	}
	if e.SAD.Len() != 5 || e.SPD.Len() != 7 {
		t.Fatalf("%d SAs %d policies", e.SAD.Len(), e.SPD.Len())
	}
	if !strings.Contains(out.String(), "spi=65537(0x00010001)") || !strings.Contains(out.String(), "esp/tunnel/192.0.2.1-192.0.2.2/unique:3") {
		t.Fatalf("dump output:\n%s", out.String())
	}
	// A failing transaction is rolled back over the socket too.
	var before, after bytes.Buffer
	setkey.DumpSAD(&before, e, 0)
	setkey.DumpSPD(&before, e)
	bad, _ := setkey.Parse("bad.conf", `
flush;
spdflush;
add 10.1.0.1 10.1.0.2 esp 0x4000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233;
spdadd 10.1.0.0/16 10.2.0.0/16 any -P out discard;
delete 10.0.0.11 10.0.0.216 esp 0x10003;
`)
	err = setkey.Execute(c, bad, &out, "bad.conf")
	if err == nil || !strings.HasPrefix(err.Error(), "bad.conf:6:1: ") {
		t.Fatalf("err %v", err)
	}
	setkey.DumpSAD(&after, e, 0)
	setkey.DumpSPD(&after, e)
	norm := func(s string) string {
		var keep []string
		for _, l := range strings.Split(s, "\n") {
			if strings.Contains(l, "created") || strings.Contains(l, "spid=") || strings.Contains(l, "diff:") {
				continue
			}
			keep = append(keep, l)
		}
		return strings.Join(keep, "\n")
	}
	if norm(before.String()) != norm(after.String()) {
		t.Fatalf("rollback over PF_KEY did not restore:\n%s\n---\n%s", before.String(), after.String())
	}
}

// TestKeyManager plays a key manager over two stacks' control sockets:
// REGISTER, traffic on a protect policy with no SA raises ACQUIRE, the
// manager answers with GETSPI + UPDATE on the receiver and ADD on the
// sender, and traffic flows. Then EXPIRE arrives at the byte, packet and
// time thresholds.
func TestKeyManager(t *testing.T) {
	p, err := testbed.New(testbed.Config{Inner: 4, Plain: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a, b := p.AddrA, p.AddrB
	host := func(x netip.Addr) netip.Prefix { return netip.PrefixFrom(x, 32) }
	tmpl := []xfrm.Template{{Proto: xfrm.ProtoESP, Mode: xfrm.ModeTransport, Level: xfrm.LevelRequire}}
	for _, sd := range []struct {
		e          *xfrm.Engine
		self, peer netip.Addr
	}{{p.A.Engine, a, b}, {p.B.Engine, b, a}} {
		sd.e.AddPolicy(&xfrm.Policy{Dir: xfrm.DirOut, Action: xfrm.ActionProtect, Templates: tmpl, Sel: xfrm.Selector{Src: host(sd.self), Dst: host(sd.peer)}})
		sd.e.AddPolicy(&xfrm.Policy{Dir: xfrm.DirIn, Action: xfrm.ActionProtect, Templates: tmpl, Sel: xfrm.Selector{Src: host(sd.peer), Dst: host(sd.self)}})
	}
	_, pathA := listen(t, p.A.Engine)
	_, pathB := listen(t, p.B.Engine)
	ca, cb := dial(t, pathA), dial(t, pathB)
	for _, c := range []*Client{ca, cb} {
		if r := call(t, c, &pfkey.Msg{Type: pfkey.MsgRegister, SAType: pfkey.SATypeESP}); r.Errno != 0 || r.SupportedEncrypt == nil {
			t.Fatalf("register: %+v", r)
		}
	}

	// Traffic with no SA: the ping fails and A's ACQUIRE arrives.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = p.A.Ping(ctx, b, 1, 56)
	cancel()
	if err == nil {
		t.Fatal("ping worked without SAs")
	}
	acq := await(t, ca, "ACQUIRE", func(m *pfkey.Msg) bool { return m.Type == pfkey.MsgAcquire })
	if acq.Src.Addr != a || acq.Dst.Addr != b || acq.Policy == nil || acq.Policy.ID == 0 || acq.Proposal == nil {
		t.Fatalf("acquire %+v", acq)
	}
	if p.A.Engine.Stats.OutNoStates.Load() == 0 {
		t.Fatal("XfrmOutNoStates not counted")
	}

	// Negotiate (in the manager's head): pick the first AEAD proposal.
	var enc uint8
	for _, c := range acq.Proposal.Combs {
		if c.Auth == 0 {
			enc = c.Encrypt
			break
		}
	}
	if enc != pfkey.EAlgAESGCM16 {
		t.Fatalf("first AEAD proposal %d", enc)
	}
	key := func(seed byte) *pfkey.Key {
		k := make([]byte, 20)
		for i := range k {
			k[i] = seed + byte(i)
		}
		return &pfkey.Key{Bits: 160, Data: k}
	}
	install := func(src, dst netip.Addr, recv, send *Client, seed byte) uint32 {
		g := call(t, recv, &pfkey.Msg{Type: pfkey.MsgGetSPI, SAType: pfkey.SATypeESP, Seq: acq.Seq,
			Src: &pfkey.Address{PrefixLen: 32, Sockaddr: pfkey.Sockaddr{Addr: src}},
			Dst: &pfkey.Address{PrefixLen: 32, Sockaddr: pfkey.Sockaddr{Addr: dst}},
			SA2: &pfkey.SA2{Mode: pfkey.ModeTransport}})
		if g.Errno != 0 || g.SA.State != pfkey.SAStateLarval {
			t.Fatalf("getspi: %+v", g)
		}
		sa := &pfkey.SA{SPI: g.SA.SPI, Replay: 32, State: pfkey.SAStateMature, Encrypt: enc}
		u := &pfkey.Msg{Type: pfkey.MsgUpdate, SAType: pfkey.SATypeESP, SA: sa, Src: g.Src, Dst: g.Dst,
			SA2: &pfkey.SA2{Mode: pfkey.ModeTransport}, KeyEncrypt: key(seed)}
		if r := call(t, recv, u); r.Errno != 0 {
			t.Fatalf("update errno %d", r.Errno)
		}
		u.Type = pfkey.MsgAdd
		if r := call(t, send, u); r.Errno != 0 {
			t.Fatalf("add errno %d", r.Errno)
		}
		return g.SA.SPI
	}
	spiAB := install(a, b, cb, ca, 1)
	install(b, a, ca, cb, 100)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := testbed.Ping(ctx, p.A, b, 3, 100); err != nil {
		t.Fatalf("ping after keys: %v", err)
	}
	if sa := p.B.Engine.SAD.Lookup(b, xfrm.ProtoESP, spiAB); sa == nil || sa.Counters.Packets.Load() < 3 {
		t.Fatal("traffic did not use the negotiated SA")
	}

	// EXPIRE thresholds. The negotiated A->B SA is deleted first: a dying
	// SA is used only when no mature one exists (RFC 2367 §3.1.2).
	if r := call(t, ca, &pfkey.Msg{Type: pfkey.MsgDelete, SAType: pfkey.SATypeESP, SA: &pfkey.SA{SPI: spiAB},
		Dst: &pfkey.Address{PrefixLen: 32, Sockaddr: pfkey.Sockaddr{Addr: b}}}); r.Errno != 0 {
		t.Fatalf("delete errno %d", r.Errno)
	}
	// A fresh outbound SA on A with soft 5 packets, hard 20 packets;
	// then soft 1000 / hard 3000 bytes; then soft 1 s / hard 2 s.
	thr := func(spi uint32, soft, hard *pfkey.Lifetime) {
		m := &pfkey.Msg{Type: pfkey.MsgAdd, SAType: pfkey.SATypeESP,
			SA:  &pfkey.SA{SPI: spi, Replay: 32, State: pfkey.SAStateMature, Encrypt: enc},
			Src: &pfkey.Address{PrefixLen: 32, Sockaddr: pfkey.Sockaddr{Addr: a}}, Dst: &pfkey.Address{PrefixLen: 32, Sockaddr: pfkey.Sockaddr{Addr: b}},
			KeyEncrypt: key(7), LifetimeSoft: soft, LifetimeHard: hard}
		if r := call(t, ca, m); r.Errno != 0 {
			t.Fatalf("add errno %d", r.Errno)
		}
		m.Type = pfkey.MsgAdd
		if r := call(t, cb, m); r.Errno != 0 {
			t.Fatalf("add on B errno %d", r.Errno)
		}
	}
	thr(0x7000, &pfkey.Lifetime{Allocations: 5}, &pfkey.Lifetime{Allocations: 20})
	sent := 0
	var soft, hard *pfkey.Msg
	for sent < 40 && hard == nil {
		ping1(p.A, b, uint16(1000+sent), 56)
		sent++
		sa := p.A.Engine.SAD.Lookup(b, xfrm.ProtoESP, 0x7000)
		if sa == nil {
			break
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for (soft == nil || hard == nil) && time.Now().Before(deadline) {
		m := await(t, ca, "EXPIRE", func(m *pfkey.Msg) bool { return m.Type == pfkey.MsgExpire && m.SA.SPI == 0x7000 })
		if m.LifetimeSoft != nil {
			soft = m
		} else {
			hard = m
		}
	}
	if soft == nil || soft.LifetimeCurrent.Allocations != 5 || soft.SA.State != pfkey.SAStateDying {
		t.Fatalf("soft EXPIRE %+v", soft)
	}
	if hard == nil || hard.LifetimeCurrent.Allocations != 21 || hard.LifetimeHard.Allocations != 20 {
		t.Fatalf("hard EXPIRE %+v cur %+v", hard, hard.LifetimeCurrent)
	}
	// Byte threshold: soft 1000 bytes, hard 3000 bytes of payload.
	thr(0x7001, &pfkey.Lifetime{Bytes: 1000}, &pfkey.Lifetime{Bytes: 3000})
	for i := 0; i < 40 && p.A.Engine.SAD.Lookup(b, xfrm.ProtoESP, 0x7001) != nil; i++ {
		ping1(p.A, b, uint16(2000+i), 200)
	}
	soft = await(t, ca, "byte soft EXPIRE", func(m *pfkey.Msg) bool { return m.Type == pfkey.MsgExpire && m.SA.SPI == 0x7001 })
	hard = await(t, ca, "byte hard EXPIRE", func(m *pfkey.Msg) bool { return m.Type == pfkey.MsgExpire && m.SA.SPI == 0x7001 })
	if soft.LifetimeSoft == nil || soft.LifetimeCurrent.Bytes < 1000 || soft.LifetimeCurrent.Bytes >= 1000+228 ||
		hard.LifetimeHard == nil || hard.LifetimeCurrent.Bytes <= 3000 || hard.LifetimeCurrent.Bytes > 3000+228 {
		t.Fatalf("byte EXPIREs: soft %+v hard %+v", soft.LifetimeCurrent, hard.LifetimeCurrent)
	}
	// Time threshold: soft after 1 s, hard after 2 s of life.
	start := time.Now()
	thr(0x7002, &pfkey.Lifetime{AddTime: 1}, &pfkey.Lifetime{AddTime: 2})
	soft = await(t, ca, "time soft EXPIRE", func(m *pfkey.Msg) bool { return m.Type == pfkey.MsgExpire && m.SA.SPI == 0x7002 })
	ts := time.Since(start)
	hard = await(t, ca, "time hard EXPIRE", func(m *pfkey.Msg) bool { return m.Type == pfkey.MsgExpire && m.SA.SPI == 0x7002 })
	th := time.Since(start)
	if soft.LifetimeSoft == nil || hard.LifetimeHard == nil || ts < time.Second || ts > 1600*time.Millisecond || th < 2*time.Second || th > 2600*time.Millisecond {
		t.Fatalf("time EXPIREs at %v and %v", ts, th)
	}
	t.Logf("time EXPIREs: soft at %v, hard at %v", ts.Round(time.Millisecond), th.Round(time.Millisecond))
	if p.A.Engine.SAD.Lookup(b, xfrm.ProtoESP, 0x7002) != nil {
		t.Fatal("hard-expired SA still present")
	}
}

// ping1 sends one echo request and waits briefly for its reply.
func ping1(s *stack.Stack, dst netip.Addr, seq uint16, size int) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	s.Ping(ctx, dst, seq, size)
}

// TestDumpBackToBack: a client that sends the next DUMP as soon as it has
// read the last message (sequence 0) of the previous one, as setkey -D -P
// does, must never be told EBUSY: the dump ends before its last message
// goes out. (It once ended only when the writer asked for the message
// after the last, a race TestSetkeyOverSocket lost now and then.)
func TestDumpBackToBack(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	_, path := listen(t, e)
	c := dial(t, path)
	st, _ := setkey.Parse("f", "add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233; spdadd 10.0.0.1 10.0.0.2 any -P out ipsec esp/transport//require;")
	if err := setkey.Execute(c, st, io.Discard, "f"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 500; i++ {
		for _, typ := range []uint8{pfkey.MsgDump, pfkey.MsgXSPDDump} {
			c.Send((&pfkey.Msg{Type: typ, SAType: pfkey.SATypeUnspec, Seq: uint32(i + 1)}).MustEncode())
			for {
				b, err := c.Recv()
				if err != nil {
					t.Fatal(err)
				}
				m, err := pfkey.Decode(b)
				if err != nil {
					t.Fatal(err)
				}
				if m.Errno != 0 {
					t.Fatalf("round %d, dump type %d: errno %d", i, typ, m.Errno)
				}
				if m.Seq == 0 {
					break
				}
			}
		}
	}
}
