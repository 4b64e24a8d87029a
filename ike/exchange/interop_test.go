package exchange

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/internal/charontest"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestStrongSwanResponder runs our initiator against a real strongSwan
// charon (5.9.8, kernel-libipsec) in a network namespace, with charon's
// default proposals: IKE_SA_INIT on port 500, IKE_AUTH with PSK on port
// 4500 (charon's libipsec always asks for UDP encapsulation through its
// NAT-D), and checks that charon reports the IKE SA and the CHILD SA up
// with the SPIs our Result holds.
func TestStrongSwanResponder(t *testing.T) {
	for _, s := range []struct {
		name string
		ike  IKESuite
		esp  ESPSuite
	}{
		{"charon's first proposals: AES-CBC-128/SHA2-256/X25519, ESP AES-GCM-16-128",
			IKESuite{message.ENCR_AES_CBC, 128, message.AUTH_HMAC_SHA2_256_128, message.PRF_HMAC_SHA2_256, message.KE_CURVE25519},
			ESPSuite{message.ENCR_AES_GCM_16, 128, message.AUTH_NONE, false}},
		{"AES-GCM-16-128/SHA2-256/MODP-2048, ESP AES-CBC-128/SHA2-256-128",
			IKESuite{message.ENCR_AES_GCM_16, 128, message.AUTH_NONE, message.PRF_HMAC_SHA2_256, message.KE_MODP2048},
			ESPSuite{message.ENCR_AES_CBC, 128, message.AUTH_HMAC_SHA2_256_128, false}},
	} {
		t.Run(s.name, func(t *testing.T) { testStrongSwanResponder(t, s.ike, s.esp) })
	}
}

// TestStrongSwanMultiProposal offers charon two proposals, the first
// AES-GCM with MODP-2048 (our KE payload's group), the second AES-CBC
// with ECP-256 and X25519. charon picks in its own order (its first
// default proposal is the AES-CBC one, X25519 its first group), so it
// answers INVALID_KE_PAYLOAD asking for X25519, and we retry with it.
func TestStrongSwanMultiProposal(t *testing.T) {
	pc := startCharon(t)
	local := netip.MustParseAddrPort("10.55.0.2:500")
	remote := netip.MustParseAddrPort("10.55.0.1:500")
	c500, c4500 := udpInNetns(t, pc.ns, local), udpInNetns(t, pc.ns, netip.AddrPortFrom(local.Addr(), NATTPort))
	ikeProps := []message.Proposal{
		IKESuite{message.ENCR_AES_GCM_16, 256, message.AUTH_NONE, message.PRF_HMAC_SHA2_384, message.KE_MODP2048}.Proposal(),
		{Protocol: message.ProtoIKE, Transforms: []message.Transform{
			encrTransform(message.ENCR_AES_CBC, 256),
			{Type: message.TransformINTEG, ID: message.AUTH_HMAC_SHA2_512_256},
			{Type: message.TransformPRF, ID: message.PRF_HMAC_SHA2_512},
			{Type: message.TransformKE, ID: message.KE_ECP256}, {Type: message.TransformKE, ID: message.KE_CURVE25519},
		}},
	}
	cfg := Config{
		Local: local, Remote: remote,
		LocalID: Email("goike@ike.test"), RemoteID: Email("charon@ike.test"), PSK: []byte(charonPSK),
		IKEProposals: ikeProps,
		ESPProposals: []message.Proposal{ESPSuite{message.ENCR_CHACHA20_POLY1305, 0, message.AUTH_NONE, false}.Proposal(),
			ESPSuite{message.ENCR_AES_GCM_16, 256, message.AUTH_NONE, false}.Proposal()},
		LocalTS:  []message.TrafficSelector{prefixTS("10.56.2.0/24")},
		RemoteTS: []message.TrafficSelector{prefixTS("10.56.1.0/24")},
		Mode:     xfrm.ModeTunnel,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := Initiate(ctx, cfg, &udpTransport{c500: c500, c4500: c4500, peer: remote.Addr()}, Retransmit{Timeout: time.Second})
	if err != nil {
		t.Fatalf("%v\n%s", err, pc.Report())
	}
	log := pc.Log()
	wantESP := ESPSuite{message.ENCR_AES_GCM_16, 256, message.AUTH_NONE, false} // charon has no ChaCha20 in its default ESP
	wantIKE := IKESuite{message.ENCR_AES_CBC, 256, message.AUTH_HMAC_SHA2_512_256, message.PRF_HMAC_SHA2_512, message.KE_CURVE25519}
	if r.ESP != wantESP || r.IKE != wantIKE {
		t.Errorf("negotiated %+v %+v, want %+v %+v", r.IKE, r.ESP, wantIKE, wantESP)
	}
	if !strings.Contains(log, "N(INVAL_KE)") {
		t.Errorf("charon did not ask for another group:\n%s", log)
	}
}

func testStrongSwanResponder(t *testing.T, ike IKESuite, esp ESPSuite) {
	pc := startCharon(t)
	nsG := pc.ns
	psk := charonPSK
	local := netip.MustParseAddrPort("10.55.0.2:500")
	remote := netip.MustParseAddrPort("10.55.0.1:500")
	c500, c4500 := udpInNetns(t, nsG, local), udpInNetns(t, nsG, netip.AddrPortFrom(local.Addr(), NATTPort))
	cfg := Config{
		Local: local, Remote: remote,
		LocalID: Email("goike@ike.test"), RemoteID: Email("charon@ike.test"), PSK: []byte(psk),
		IKE:      ike,
		ESP:      esp,
		LocalTS:  []message.TrafficSelector{prefixTS("10.56.2.0/24")},
		RemoteTS: []message.TrafficSelector{prefixTS("10.56.1.0/24")},
		Mode:     xfrm.ModeTunnel,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := Initiate(ctx, cfg, &udpTransport{c500: c500, c4500: c4500, peer: remote.Addr()}, Retransmit{Timeout: time.Second})
	if err != nil {
		t.Fatalf("%v\n%s", err, pc.Report())
	}
	sas, _ := pc.ListSAs()
	wantIKE := fmt.Sprintf("%016x_i %016x_r*", r.SPIi, r.SPIr)
	if !strings.Contains(sas, "ESTABLISHED") || !strings.Contains(sas, wantIKE) ||
		!strings.Contains(sas, fmt.Sprintf("in  %08x", r.Out.SPI)) || !strings.Contains(sas, fmt.Sprintf("out %08x", r.In.SPI)) {
		t.Errorf("charon's view does not match ours (IKE %s, our in %08x out %08x):\n%s", wantIKE, r.In.SPI, r.Out.SPI, sas)
	}
	if !r.NATT || r.Out.Encap.Type != xfrm.EncapESPInUDP {
		t.Errorf("expected NAT-T with charon's kernel-libipsec: NATT %v encap %+v", r.NATT, r.Out.Encap)
	}
	t.Logf("IKE SA %016x/%016x, CHILD SA in %08x out %08x, NAT-T %v; charon:\n%s", r.SPIi, r.SPIr, r.In.SPI, r.Out.SPI, r.NATT, sas)
}

// udpInNetns opens a UDP socket bound to addr inside network namespace
// ns; the socket keeps the namespace it was created in.
func udpInNetns(t *testing.T, ns string, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := charontest.InNetns(ns, func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	}); err != nil {
		t.Fatalf("UDP socket in %s: %v", ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// udpTransport is a Transport over two UDP sockets, ports 500 and 4500;
// on 4500 it adds and strips the non-ESP marker (RFC 3948 §2.2) and skips
// NAT keepalives and ESP.
type udpTransport struct {
	c500, c4500 *net.UDPConn
	peer        netip.Addr
	natt        bool // the port of the last send, where the answer comes
}

func (u *udpTransport) Send(b []byte, natt bool) error {
	u.natt = natt
	c, port := u.c500, uint16(500)
	if natt {
		c, port, b = u.c4500, NATTPort, append([]byte{0, 0, 0, 0}, b...)
	}
	_, err := c.WriteToUDPAddrPort(b, netip.AddrPortFrom(u.peer, port))
	return err
}

func (u *udpTransport) Recv(ctx context.Context) ([]byte, bool, error) {
	c := u.c500
	if u.natt {
		c = u.c4500
	}
	if d, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(d)
	}
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, false, ctx.Err()
			}
			return nil, false, err
		}
		b := buf[:n]
		if from.Addr().Unmap() != u.peer {
			continue
		}
		if u.natt {
			if n <= 4 || !bytes.Equal(b[:4], []byte{0, 0, 0, 0}) {
				continue // a NAT keepalive or ESP
			}
			b = b[4:]
		}
		return append([]byte(nil), b...), u.natt, nil
	}
}

// charonPSK is the key charon and our side share in the interop tests.
const charonPSK = "interop-psk-0123456789abcdef"

// peerCharon is charon in its namespace at 10.55.0.1 and the namespace
// of our side, 10.55.0.2.
type peerCharon struct {
	*charontest.Charon
	ns string // the namespace for our side, 10.55.0.2
}

// startCharon starts charon in a namespace at 10.55.0.1 with strongSwan's
// default proposals and a PSK connection to 10.55.0.2, and returns the
// other namespace for our side; it skips the test when charon or root is
// missing (fails it under CI=true).
func startCharon(t *testing.T) peerCharon {
	t.Helper()
	return startCharonWith(t, "", "", nil)
}

// startCharonWith is startCharon with more swanctl.conf connections
// (sections inside connections { }) and files in swanctl's directory dir
// (private/NAME for keys: swanctl.conf's secrets only hold their
// passphrases); an empty dir is a new one.
func startCharonWith(t *testing.T, dir, conns string, files map[string][]byte) peerCharon {
	t.Helper()
	charontest.Require(t)
	nsC, nsG := charontest.Netns(t, "ikec"), charontest.Netns(t, "ikeg")
	charontest.IP(t, "link", "add", "vc", "netns", nsC, "type", "veth", "peer", "name", "vg", "netns", nsG)
	for _, c := range [][]string{
		{"-n", nsC, "link", "set", "vc", "up"}, {"-n", nsG, "link", "set", "vg", "up"},
		{"-n", nsC, "addr", "add", "10.55.0.1/24", "dev", "vc"},
		{"-n", nsG, "addr", "add", "10.55.0.2/24", "dev", "vg"},
		{"-n", nsC, "addr", "add", "10.56.1.1/32", "dev", "lo"},
		{"-n", nsC, "addr", "add", "10.56.3.1/32", "dev", "lo"},
	} {
		charontest.IP(t, c...)
	}
	swan := fmt.Sprintf(`connections {
  gw {
    version = 2
    local_addrs = 10.55.0.1
    remote_addrs = 10.55.0.2
    proposals = default
    local { auth = psk
            id = charon@ike.test }
    remote { auth = psk
             id = goike@ike.test }
    dpd_delay = 2s
    children { net { local_ts = 10.56.1.0/24
                     remote_ts = 10.56.2.0/24
                     esp_proposals = default }
               net2 { local_ts = 10.56.3.0/24
                      remote_ts = 10.56.4.0/24
                      esp_proposals = aes256-sha256-ecp256 } }
  }
%s
}
secrets { ike-gw { id-a = charon@ike.test
                   id-b = goike@ike.test
                   secret = "%s" }
}
`, conns, charonPSK)
	// chd = 4: the CHILD SA keys, for keysMatchCharon.
	c := charontest.Start(t, charontest.Options{Netns: nsC, Dir: dir, SwanctlConf: swan, Files: files, LogLevels: "chd = 4"})
	return peerCharon{Charon: c, ns: nsG}
}

// swanctlAsync runs a swanctl command in the background (some wait for
// the exchange they start, which needs our side running) and delivers its
// output, with the error if any.
func swanctlAsync(pc peerCharon, args ...string) chan string {
	ch := make(chan string, 1)
	go func() {
		out, err := pc.Swanctl(args...)
		if err != nil {
			out += "\n" + err.Error()
		}
		ch <- out
	}()
	return ch
}

// TestStrongSwanInitiator runs our responder against charon as initiator
// (swanctl --initiate), with charon's default proposals: several IKE and
// ESP proposals to choose from, IKE_AUTH moved to port 4500. Our
// responder answers charon's first KE (Curve25519) with
// INVALID_KE_PAYLOAD, since it wants ECP-384.
func TestStrongSwanInitiator(t *testing.T) {
	pc := startCharon(t)
	local := netip.MustParseAddrPort("10.55.0.2:500")
	remote := netip.MustParseAddrPort("10.55.0.1:500")
	r, err := NewResponder(Config{
		Local: local, Remote: remote,
		LocalID: Email("goike@ike.test"), RemoteID: Email("charon@ike.test"), PSK: []byte(charonPSK),
		IKE:      IKESuite{message.ENCR_AES_GCM_16, 256, message.AUTH_NONE, message.PRF_HMAC_SHA2_384, message.KE_ECP384},
		ESP:      ESPSuite{message.ENCR_AES_CBC, 256, message.AUTH_HMAC_SHA2_256_128, false},
		LocalTS:  []message.TrafficSelector{prefixTS("10.56.2.0/24")},
		RemoteTS: []message.TrafficSelector{prefixTS("10.56.1.0/24")},
		Mode:     xfrm.ModeTunnel,
	})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := serveCharon(t, pc, r, "net")
	res := r.Result()
	if !strings.Contains(out, "established") || !strings.Contains(out, fmt.Sprintf("%08x_i %08x_o", res.Out.SPI, res.In.SPI)) {
		t.Errorf("charon's initiate output does not show our CHILD SA (in %08x out %08x):\n%s", res.In.SPI, res.Out.SPI, out)
	}
	t.Logf("charon:\n%s", out)
}
