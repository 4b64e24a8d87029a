package setkey

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

func parseFile(t *testing.T, name string) []Statement {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	st, err := Parse(name, string(b))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestRealWorldFiles(t *testing.T) {
	for _, c := range []struct {
		file     string
		sas, sps int
	}{
		{"host-to-host.conf", 5, 7},
		{"freebsd-vpn.conf", 2, 2},
		{"ipsec-tools-manpage.conf", 3, 5},
		{"nat-t.conf", 4, 2},
	} {
		e := xfrm.NewEngine()
		var out bytes.Buffer
		if err := ApplyTo(e, parseFile(t, c.file), &out, c.file); err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		if e.SAD.Len() != c.sas || e.SPD.Len() != c.sps {
			t.Errorf("%s: %d SAs %d policies, want %d %d", c.file, e.SAD.Len(), e.SPD.Len(), c.sas, c.sps)
		}
		e.Close()
	}
}

func TestEveryStatement(t *testing.T) {
	st := parseFile(t, "host-to-host.conf")
	seen := map[string]bool{}
	for _, s := range st {
		seen[s.Cmd] = true
	}
	for _, c := range []string{"add", "get", "delete", "deleteall", "flush", "dump", "spdadd", "spdupdate", "spddelete", "spdflush", "spddump"} {
		if !seen[c] {
			t.Errorf("host-to-host.conf lacks %s", c)
		}
	}
	// Spot-check what the parser built.
	add := st[2]
	if add.SA.SPI != 0x10001 || add.SA.ReplayWindow != 32 || add.SA.ReqID != 7 || add.SA.Enc.Name != "rijndael-cbc" || add.SA.Auth.Name != "hmac-sha1" {
		t.Fatalf("add: %+v", add.SA)
	}
	gcm := st[4]
	if gcm.SA.Mode != xfrm.ModeTunnel || gcm.SA.Hard.AddSeconds != 3600 || gcm.SA.Soft.Bytes != 80000000 || gcm.PadOption != "random-pad" || len(gcm.SA.AEAD.Key) != 20 {
		t.Fatalf("gcm: %+v", gcm)
	}
	var prios []uint32
	for _, s := range st {
		if s.Cmd == "spdadd" {
			prios = append(prios, s.Policy.Priority)
		}
	}
	want := []uint32{PriorityDefault, PriorityDefault, PriorityHigh - 10, PriorityDefault - 100, PriorityLow + 5, PriorityDefault + 3, PriorityDefault, PriorityDefault}
	if fmt.Sprint(prios) != fmt.Sprint(want) {
		t.Fatalf("priorities %x, want %x", prios, want)
	}
	icmp := st[10].Policy.Sel
	if icmp.Proto != xfrm.ProtoICMPv6 || icmp.SrcPorts.Lo != 135 {
		t.Fatalf("icmp6 selector %+v", icmp)
	}
	tun := st[9].Policy.Templates[0]
	if tun.Mode != xfrm.ModeTunnel || tun.Level != xfrm.LevelUnique || tun.ReqID != 3 || tun.Src.String() != "192.0.2.1" {
		t.Fatalf("tunnel template %+v", tun)
	}
}

func TestPriorityForms(t *testing.T) {
	for in, want := range map[string]uint32{
		"":                PriorityDefault,
		"prio def":        PriorityDefault,
		"prio high":       PriorityHigh,
		"prio low":        PriorityLow,
		"prio 10":         PriorityDefault - 10,
		"prio -10":        PriorityDefault + 10,
		"prio - 10":       PriorityDefault + 10,
		"prio high + 5":   PriorityHigh - 5,
		"prio high +5":    PriorityHigh - 5,
		"prio low - 7":    PriorityLow + 7,
		"priority def -1": PriorityDefault + 1,
	} {
		st, err := Parse("p", "spdadd 10.0.0.1 10.0.0.2 any -P out "+in+" none;")
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if got := st[0].Policy.Priority; got != want {
			t.Errorf("%q: %#x, want %#x", in, got, want)
		}
		if in != "" && in != "priority def -1" && in != "prio - 10" && in != "prio high +5" {
			canon := strings.Replace(strings.Replace(in, "prio 10", "prio def + 10", 1), "prio -10", "prio def - 10", 1)
			if got := PriorityString(want); got != canon {
				t.Errorf("PriorityString(%#x) = %q, want %q", want, got, canon)
			}
		}
	}
}

// Malformed inputs: each must fail with FILE:LINE:COL and change nothing.
var malformed = []struct{ src, want string }{
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-cbc 0x0011;", "1:1: SA esp spi 0x1000 10.0.0.1->10.0.0.2: esp: aes-cbc: key is 2 bytes"},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E cast128-cbc 0x0011223344556677;", `1:37: unknown or unimplemented encryption algorithm "cast128-cbc"`},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E blowfish-cbc 0x00;", `1:37: unknown or unimplemented encryption algorithm "blowfish-cbc"`},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-cbc 0x00112233445566778899aabbccddeeff -A hmac-ripemd160 0x00112233445566778899aabbccddeeff;", `unknown or unimplemented authentication algorithm "hmac-ripemd160"`},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E hmac-sha1 0x00;", "hmac-sha1 is an authentication algorithm; use -A"},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233 -A hmac-sha1 0x0011223344556677889900112233445566778899;", "1:34: aes-gcm-16 is an AEAD algorithm: it takes no -A"},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000;", "esp SA needs -E"},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E null;", "-E null needs -A"},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-cbc;", `expected a key`},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-cbc 0x123;", "odd number of hex digits"},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-cbc 0xzz;", "is not hexadecimal"},
	{"add 10.0.0.1 10.0.0.2 esp 0x10 -E aes-cbc 0x00112233445566778899aabbccddeeff -A hmac-sha1 0x0011223344556677889900112233445566778899;", "SPIs 0-255 are reserved"},
	{"add 10.0.0.1 2001:db8::1 esp 0x1000 -E null -A hmac-sha1 0x00;", "1:14: source 10.0.0.1 and destination 2001:db8::1 are of different address families"},
	{"add 10.0.0.1 10.0.0.300 esp 0x1000;", `1:14: invalid destination address "10.0.0.300"`},
	{"add host.example 10.0.0.2 esp 0x1000;", `1:5: invalid source address`},
	{"add 10.0.0.1 10.0.0.2 esp-old 0x1000;", "not supported"},
	{"add 10.0.0.1 10.0.0.2 gre 0x1000;", `unknown protocol "gre"`},
	{"add 10.0.0.1 10.0.0.2 esp 0x1ffffffff;", "invalid SPI"},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -m beet -E null -A hmac-sha1 0x00;", `unknown mode "beet"`},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -f odd-pad;", `unknown pad option "odd-pad"`},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -lh soon;", `invalid lifetime "soon"`},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -x 1;", `unknown option "-x"`},
	{"add 10.0.0.1 10.0.0.2 ipcomp 0x1000 -C lzs;", `1:40: unknown or unimplemented compression algorithm "lzs"`},
	{"add 10.0.0.1 10.0.0.2 ipcomp 0x1000;", "ipcomp SA needs -C deflate"},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-cbc 0x00112233445566778899aabbccddeeff", "expected an option"},
	{"frobnicate;", `1:1: unknown command "frobnicate"`},
	{"flush esp", `expected ";", found end of input`},
	{"get 10.0.0.1 10.0.0.2 esp;", "expected SPI"},
	{"spdadd 10.0.0.0/33 10.0.1.0/24 any -P out none;", `invalid prefix length "33"`},
	{"spdadd 10.0.0.0/24[http] 10.0.1.0/24 any -P out none;", `invalid port "http"`},
	{"spdadd 10.0.0.0/24 ::/0 any -P out none;", "different address families"},
	{"spdadd 10.0.0.0/24 10.0.1.0/24 bogus -P out none;", `unknown upper-layer protocol "bogus"`},
	{"spdadd 10.0.0.0/24 10.0.1.0/24 any -P sideways none;", `unknown direction "sideways"`},
	{"spdadd 10.0.0.0/24 10.0.1.0/24 any -P out maybe;", `unknown policy action "maybe"`},
	{"spdadd 10.0.0.0/24 10.0.1.0/24 any -P out ipsec;", "needs at least one request"},
	{"spdadd 10.0.0.0/24 10.0.1.0/24 any -P out ipsec esp/tunnel//require;", "needs endpoints"},
	{"spdadd 10.0.0.0/24 10.0.1.0/24 any -P out ipsec esp/transport//sometimes;", `unknown level "sometimes"`},
	{"spdadd 10.0.0.0/24 10.0.1.0/24 any -P out ipsec esp/transport//unique:x;", `invalid unique id "x"`},
	{"spdadd 10.0.0.0/24 10.0.1.0/24 any -P out ipsec esp/tunnel/10.0.0.1-2001:db8::1/require;", "different families"},
	{"spdadd 10.0.0.0/24 10.0.1.0/24 any -P out ipsec gre/transport//require;", `unknown request protocol "gre"`},
	{"spdadd 10.0.0.0/24 10.0.1.0/24 any -P out none esp/transport//require;", "a none policy takes no requests"},
	{"spdadd 10.0.0.0/24 10.0.1.0/24 any -P out prio high + 9999999999 none;", "invalid priority offset"},
	{"spdadd 10.0.0.0/24 10.0.1.0/24 any -P out prio low - 1073741824 none;", "out of range"},
	{"spdadd 10.0.0.0/24 10.0.1.0/24 any -P out prio whenever none;", `invalid priority "whenever"`},
	{"spdadd 10.0.0.0/24 10.0.1.0/24 icmp6 300 -P out none;", `invalid ICMP type "300"`},
	{"spdadd 10.0.0.0/24 10.0.1.0/24 any out none;", "expected -P"},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-cbc \"unterminated;", "1:45: unterminated string"},
	{"flush;\n\n   spdflush esp;", "3:13: expected \";\""},
	{"flush; # comment\nadd 10.0.0.1 \\\n 10.0.0.2 esp 0x1000 -E null;", "3:22: -E null needs -A"},
	{"spddelete 10.0.0.0/24 10.0.1.0/24 any -P;", "expected a direction"},
	{"add 10.0.0.1 10.0.0.2 esp 0x1000 -E aes-cbc 0x00112233445566778899aabbccddeeff -A hmac-sha1 0x0011;", "hmac-sha1: key is 2 bytes"},
	// NAT-T (ipsec-tools' esp-udp).
	{"add 10.0.0.1 192.0.2.1 esp-udp 0x1000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233;", "1:24: esp-udp needs the UDP port of both addresses"},
	{"add 10.0.0.1[4500] 192.0.2.1 esp-udp 0x1000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233;", "1:30: esp-udp needs the UDP port of both addresses"},
	{"add 10.0.0.1[4500] 192.0.2.1[4500] esp 0x1000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233;", "1:5: a port on an SA address is for esp-udp (ESP in UDP) only, not esp"},
	{"add 10.0.0.1 192.0.2.1[4500] ah 0x1000 -A hmac-sha1 0x0011223344556677889900112233445566778899;", "1:14: a port on an SA address is for esp-udp (ESP in UDP) only, not ah"},
	{"add 10.0.0.1[0] 192.0.2.1[4500] esp-udp 0x1000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233;", "1:5: esp-udp port must be 1-65535"},
	{"add 10.0.0.1[4500] 192.0.2.1[any] esp-udp 0x1000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233;", "1:20: esp-udp port must be 1-65535"},
	{"add 10.0.0.1[70000] 192.0.2.1[4500] esp-udp 0x1000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233;", `1:5: invalid port "70000" in source address`},
	{"add 10.0.0.1[4500 192.0.2.1[4500] esp-udp 0x1000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233;", `1:5: invalid source address "10.0.0.1[4500": unbalanced "["`},
	{"add 10.0.0.1[4500] 192.0.2.1[4500] esp-udp 2001:db8::9 0x1000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233;", "1:44: NAT original address 2001:db8::9 is not of the SA's address family"},
	{"add 10.0.0.1[4500] 192.0.2.1[4500] esp-udp 198.51.100.7 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233;", `1:57: invalid SPI "-E"`},
	{"get 10.0.0.1[4500] 192.0.2.1[4500] esp 0x1000;", "1:5: a port on an SA address is for esp-udp"},
}

func TestMalformed(t *testing.T) {
	if len(malformed) < 30 {
		t.Fatalf("only %d malformed inputs", len(malformed))
	}
	e := xfrm.NewEngine()
	defer e.Close()
	// A populated engine, so "nothing changed" means something.
	if err := Apply(e, parseFile(t, "freebsd-vpn.conf")); err != nil {
		t.Fatal(err)
	}
	nsa, nsp := e.SAD.Len(), e.SPD.Len()
	for _, c := range malformed {
		// A valid statement first: it must not be applied either.
		src := "add 10.9.9.1 10.9.9.2 esp 0x9999 -E null -A hmac-sha1 0x0011223344556677889900112233445566778899;\n" +
			"spdadd 10.9.0.0/16 10.8.0.0/16 any -P out none;\n" + c.src
		st, err := Parse("bad.conf", src)
		if err == nil {
			err = Apply(e, st)
		}
		if err == nil {
			t.Errorf("%q: no error", c.src)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "bad.conf:") {
			t.Errorf("%q: error %q is not one FILE:LINE:COL line", c.src, msg)
		}
		// Shift expected line numbers by the two prefix lines.
		want := c.want
		var l, col int
		if n, _ := fmt.Sscanf(want, "%d:%d:", &l, &col); n == 2 {
			want = fmt.Sprintf("%d:%d:%s", l+2, col, strings.SplitN(want, ":", 3)[2])
		}
		if !strings.Contains(msg, want) {
			t.Errorf("%q:\n got %q\nwant %q", c.src, msg, want)
		}
		if e.SAD.Len() != nsa || e.SPD.Len() != nsp {
			t.Fatalf("%q changed state: SAD %d SPD %d", c.src, e.SAD.Len(), e.SPD.Len())
		}
	}
}

// TestApplyRollsBack fails in the apply phase (a duplicate SA) after
// deletes, flushes and adds, and checks everything came back.
func TestApplyRollsBack(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	if err := Apply(e, parseFile(t, "freebsd-vpn.conf")); err != nil {
		t.Fatal(err)
	}
	var before bytes.Buffer
	DumpSAD(&before, e, 0)
	DumpSPD(&before, e)
	src := `
delete 172.16.5.4 192.168.2.1 esp 0x1001;
spddelete 192.168.1.0/24 192.168.2.0/24 any -P out;
add 10.0.0.1 10.0.0.2 esp 0x5000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233;
spdadd 10.0.0.0/8 10.0.0.0/8 any -P fwd discard;
flush;
spdflush;
add 192.168.2.1 172.16.5.4 esp 0x1002 -E null -A hmac-sha1 0x0011223344556677889900112233445566778899;
add 192.168.2.1 172.16.5.4 esp 0x1002 -E null -A hmac-sha1 0x0011223344556677889900112233445566778899;
`
	st, err := Parse("rb.conf", src)
	if err != nil {
		t.Fatal(err)
	}
	err = ApplyTo(e, st, io.Discard, "rb.conf")
	if err == nil || !strings.HasPrefix(err.Error(), "rb.conf:9:1: ") || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("err %v", err)
	}
	var after bytes.Buffer
	DumpSAD(&after, e, 0)
	DumpSPD(&after, e)
	strip := func(s string) string { // times and policy ids may differ
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if strings.Contains(l, "created") || strings.Contains(l, "spid=") || strings.Contains(l, "diff:") {
				continue
			}
			out = append(out, l)
		}
		return strings.Join(out, "\n")
	}
	if strip(before.String()) != strip(after.String()) {
		t.Fatalf("state not restored:\nbefore:\n%s\nafter:\n%s", before.String(), after.String())
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"host-to-host.conf", "freebsd-vpn.conf", "ipsec-tools-manpage.conf", "nat-t.conf"} {
		b, _ := os.ReadFile(filepath.Join("testdata", name))
		f.Add(string(b))
	}
	for _, c := range malformed {
		f.Add(c.src)
	}
	f.Fuzz(func(t *testing.T, src string) {
		st, err := Parse("fuzz", src)
		if err != nil {
			if strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "fuzz:") {
				t.Fatalf("bad error %q", err)
			}
			return
		}
		e := xfrm.NewEngine()
		defer e.Close()
		if err := Apply(e, st); err != nil && e.SAD.Len()+e.SPD.Len() != 0 {
			t.Fatalf("failed apply left state: %v", err)
		}
	})
}
