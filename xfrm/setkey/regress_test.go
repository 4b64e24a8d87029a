package setkey

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

func mustApply(t *testing.T, e *xfrm.Engine, src string) {
	t.Helper()
	st, err := Parse("t.conf", src)
	if err != nil {
		t.Fatal(err)
	}
	if err := ApplyTo(e, st, io.Discard, "t.conf"); err != nil {
		t.Fatal(err)
	}
}

// TestSPDUpdateReplacesAcrossPriorities is issue 10 finding 4 through
// setkey: a bypass at a high priority number updated to require ESP at a
// better one protects afterwards, an spdadd of the same selector at another
// priority fails (EEXIST), spddelete ignores the priority, and a failed
// file rolls an spdupdate back to the old policy with its old priority.
func TestSPDUpdateReplacesAcrossPriorities(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	mustApply(t, e, "spdadd 10.1.0.0/16 10.2.0.0/16 any -P out prio 100 none;")
	f := &xfrm.Flow{Src: netip.MustParseAddr("10.1.0.1"), Dst: netip.MustParseAddr("10.2.0.1"), Proto: xfrm.ProtoUDP, SrcPort: 1, DstPort: 2}
	if p := e.SPD.Lookup(xfrm.DirOut, f); p == nil || p.Action != xfrm.ActionBypass {
		t.Fatalf("Lookup = %v", p)
	}

	st, err := Parse("t.conf", "spdadd 10.1.0.0/16 10.2.0.0/16 any -P out prio 150 ipsec esp/transport//require;")
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(e, st); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("spdadd of the same selector at another priority: %v, want EEXIST", err)
	}

	// A file that updates and then fails: the old bypass comes back.
	st, err = Parse("t.conf", "spdupdate 10.1.0.0/16 10.2.0.0/16 any -P out prio 150 ipsec esp/transport//require;\nget 10.0.0.1 10.0.0.2 esp 0x999;")
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(e, st); err == nil {
		t.Fatal("get of a missing SA succeeded")
	}
	if p := e.SPD.Lookup(xfrm.DirOut, f); p == nil || p.Action != xfrm.ActionBypass || p.Priority != PriorityDefault-100 || e.SPD.Len() != 1 {
		t.Fatalf("after rollback: %v (%d policies), want the bypass at prio 100", p, e.SPD.Len())
	}

	mustApply(t, e, "spdupdate 10.1.0.0/16 10.2.0.0/16 any -P out prio 150 ipsec esp/transport//require;")
	p := e.SPD.Lookup(xfrm.DirOut, f)
	if p == nil || p.Action != xfrm.ActionProtect || p.Priority != PriorityDefault-150 || e.SPD.Len() != 1 {
		t.Fatalf("after spdupdate: %v (%d policies), want ESP required at prio 150", p, e.SPD.Len())
	}
	if v, _ := e.Output(udp4(t), xfrm.HeapAllocator{}); v == xfrm.VerdictPass {
		t.Fatalf("a packet of the updated flow went out in clear")
	}

	// spddelete names another priority (the default): still deleted.
	mustApply(t, e, "spddelete 10.1.0.0/16 10.2.0.0/16 any -P out;")
	if e.SPD.Len() != 0 {
		t.Fatalf("spddelete left %d policies", e.SPD.Len())
	}
}

// udp4 is an IPv4 UDP packet 10.1.0.1:1 -> 10.2.0.1:2.
func udp4(t *testing.T) []byte {
	t.Helper()
	p := []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 1, 0, 1, 10, 2, 0, 1,
		0, 1, 0, 2, 0, 8, 0, 0}
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(p[i])<<8 | uint32(p[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	p[10], p[11] = byte(^sum>>8), byte(^sum)
	return p
}

// TestUniqueWithoutReqID is issue 10 finding 8: "unique" without an id
// binds the policy to SAs of its own reqid (assigned above
// IPSEC_MANUAL_REQID_MAX, as Linux's af_key does), instead of acting as
// "require" and taking any SA; -DP shows the reqid it got.
func TestUniqueWithoutReqID(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	mustApply(t, e, `add 10.1.0.1 10.2.0.1 esp 0x1000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233;
spdadd 10.1.0.0/16 10.2.0.0/16 any -P out ipsec esp/transport//unique;`)
	var p *xfrm.Policy
	e.SPD.Walk(func(q *xfrm.Policy) bool { p = q; return false })
	r := p.Templates[0].ReqID
	if p.Templates[0].Level != xfrm.LevelUnique || r <= xfrm.MaxManualReqID {
		t.Fatalf("template %+v: want level unique with a reqid above %#x", p.Templates[0], xfrm.MaxManualReqID)
	}
	// The SA has no reqid: a unique policy must not take it.
	if v, _ := e.Output(udp4(t), xfrm.HeapAllocator{}); v != xfrm.VerdictDrop {
		t.Fatalf("unique policy used an SA of another reqid: verdict %v", v)
	}
	var out strings.Builder
	DumpSPD(&out, e)
	if want := fmt.Sprintf("esp/transport//unique:%d", r); !strings.Contains(out.String(), want) {
		t.Errorf("-DP output lacks %q:\n%s", want, out.String())
	}
	// With -u of that reqid the SA is the policy's own.
	mustApply(t, e, fmt.Sprintf("add 10.1.0.1 10.2.0.1 esp 0x1001 -u %d -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233;", r))
	if v, _ := e.Output(udp4(t), xfrm.HeapAllocator{}); v != xfrm.VerdictProtected {
		t.Fatalf("unique policy did not use its own SA: verdict %v", v)
	}
}

// TestICMPTypeZeroExact is issue 10 finding 8: "icmp 0" is the IPv4 echo
// reply (RFC 792), not every ICMP type. The selector is exact, prints
// back as written, and a file using it is refused before anything is
// sent over PF_KEY, whose port 0 means any (Linux's af_key), instead of
// being widened there.
func TestICMPTypeZeroExact(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	src := "spdadd 10.1.0.0/16 10.2.0.0/16 icmp 0 -P in discard;\nspdadd 10.1.0.0/16 10.2.0.0/16 icmp 3,0 -P out discard;"
	mustApply(t, e, src)
	flow := func(typ, code uint16) *xfrm.Flow {
		return &xfrm.Flow{Src: netip.MustParseAddr("10.1.0.1"), Dst: netip.MustParseAddr("10.2.0.1"), Proto: xfrm.ProtoICMP, SrcPort: typ, DstPort: code}
	}
	if p := e.SPD.Lookup(xfrm.DirIn, flow(8, 0)); p != nil {
		t.Errorf("echo request (type 8) matched the icmp 0 policy")
	}
	if p := e.SPD.Lookup(xfrm.DirIn, flow(0, 0)); p == nil {
		t.Errorf("echo reply did not match the icmp 0 policy")
	}
	if p := e.SPD.Lookup(xfrm.DirOut, flow(3, 1)); p != nil {
		t.Errorf("type 3 code 1 matched the icmp 3,0 policy")
	}
	var out strings.Builder
	DumpSPD(&out, e)
	for _, want := range []string{"10.1.0.0/16 10.2.0.0/16 icmp 0\n", "10.1.0.0/16 10.2.0.0/16 icmp 3,0\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("-DP output lacks %q:\n%s", want, out.String())
		}
	}
	st, err := Parse("icmp.conf", src)
	if err != nil {
		t.Fatal(err)
	}
	err = Execute(deadConn{}, st, io.Discard, "icmp.conf")
	if err == nil || !strings.HasPrefix(err.Error(), "icmp.conf:1:1: ") || !strings.Contains(err.Error(), "PF_KEY") {
		t.Errorf("Execute of icmp 0 over PF_KEY: %v, want a refusal at icmp.conf:1:1", err)
	}
	// A code of any type, as PF_KEY can carry it (port 0 = any type),
	// parses and prints back.
	e2 := xfrm.NewEngine()
	defer e2.Close()
	mustApply(t, e2, "spdadd ::/0 ::/0 icmp6 any,4 -P in discard;")
	out.Reset()
	DumpSPD(&out, e2)
	if !strings.Contains(out.String(), "::/0 ::/0 icmp6 any,4\n") {
		t.Errorf("-DP of icmp6 any,4:\n%s", out.String())
	}
	// A code 0 goes over PF_KEY as af_key reads it: that type, any code.
	if m, err := Messages(&st[1]); err != nil || m.Src.Port != 3 || m.Dst.Port != 0 {
		t.Errorf("icmp 3,0 over PF_KEY: %+v, %v", m, err)
	}
}

// deadConn is a PF_KEY connection that fails every call: a test using it
// checks what is refused before anything is sent.
type deadConn struct{}

func (deadConn) Send([]byte) error     { return io.ErrClosedPipe }
func (deadConn) Recv() ([]byte, error) { return nil, io.ErrClosedPipe }

// TestErrorsNeverEchoKeys is issue 16 finding 7: a key with an odd number
// of hex digits was refused with the whole key quoted, and the message
// lands on stderr or in the journal. Errors name FILE:LINE:COL and the
// field; no error of the parser, quoting a token or a part of one, may
// show key digits, wherever a key is misplaced.
func TestErrorsNeverEchoKeys(t *testing.T) {
	const k = "0x5ec12e7d1917a1b2c3d4e5f60718293a4b5c6d7e" // 20 bytes
	const pass = "correct horse battery"
	for _, c := range []struct {
		src, want string
	}{
		// The finding: an odd number of digits.
		{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 " + k + "f;", "k.conf:1:48: encryption key for aes-gcm-16 has an odd number of hex digits (41)"},
		{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E null -A hmac-sha1\n   " + k + "f;", "k.conf:2:4: authentication key for hmac-sha1 has an odd number of hex digits (41)"},
		{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 " + k + "zz;", "k.conf:1:48: encryption key for aes-gcm-16 is not hexadecimal"},
		// Misplaced keys reach other fields.
		{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E " + k + ";", "k.conf:1:37: unknown or unimplemented encryption algorithm a 42-character hexadecimal value"},
		{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 " + k + " " + k + ";", "k.conf:1:91: expected an option"},
		{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 " + k[2:] + ";", "k.conf:1:48: expected a key"},
		{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E null -A hmac-sha1 \"" + pass + "\" \"" + pass + "\";", "k.conf:1:79: expected an option"},
		{"add 10.0.0.1 10.0.0.2 esp 0x1000 -A " + k + ";", "k.conf:1:37: unknown or unimplemented authentication algorithm"},
		{"add 10.0.0.1 10.0.0.2 esp 0x1000 -C " + k + ";", "k.conf:1:37: unknown or unimplemented compression algorithm"},
		{"add 10.0.0.1 10.0.0.2 esp 0x1000 -m " + k + ";", "k.conf:1:37: unknown mode"},
		{"add " + k + " 10.0.0.2 esp 0x1000;", "k.conf:1:5: invalid source address"},
		{"add 10.0.0.1 10.0.0.2 esp " + k + ";", "k.conf:1:27: invalid SPI"},
		{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 " + k[:20] + "\x01" + k[20:] + ";", "k.conf:1:68: unexpected control or non-ASCII character"},
		{"spdadd 10.0.0.0/24 10.0.1.0/24 any -P out ipsec " + k + ";", "k.conf:1:49: request a 42-character hexadecimal value needs"},
		{"spdadd 10.0.0.0/24[" + k[2:] + "] 10.0.1.0/24 any -P out none;", "k.conf:1:8: invalid port a 40-character hexadecimal value"},
		{"spdadd 10.0.0.0/24 10.0.1.0/24 any -P out ipsec esp/transport//unique:" + k[2:] + ";", "k.conf:1:49: invalid unique id a 40-character"},
	} {
		st, err := Parse("k.conf", c.src)
		if err == nil {
			e := xfrm.NewEngine()
			err = Apply(e, st)
			e.Close()
		}
		if err == nil {
			t.Errorf("%q: accepted", c.src)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, c.want) {
			t.Errorf("%q:\n got %q\nwant prefix %q", c.src, msg, c.want)
		}
		// No 6 consecutive characters of the key or passphrase.
		for _, secret := range []string{k[2:], pass} {
			for i := 0; i+6 <= len(secret); i++ {
				if strings.Contains(strings.ToLower(msg), secret[i:i+6]) {
					t.Errorf("%q: error %q shows key material %q", c.src, msg, secret[i:i+6])
					break
				}
			}
		}
	}
}
