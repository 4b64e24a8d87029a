package integration

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/esp"
	"github.com/ipsecstack/ipsecstack/xfrm/ipcomp"
)

// alg is one algorithm of a suite: its Linux xfrm name, the key length in
// bytes (with the salt or nonce Linux appends to the key), and the ICV
// length in bits (0 for a cipher).
type alg struct {
	Name   string
	KeyLen int
	ICV    int
}

// suite is an ESP or AH transform: AEAD, or Enc with Auth (ESP), or Auth
// alone (AH); plus how the independent tools name it ("" where they cannot
// handle it, see DESIGN §7).
type suite struct {
	Name            string
	AEAD, Enc, Auth alg
	// scapy's algorithm names; ScapyOK says scapy handles the suite.
	ScapyCrypt, ScapyAuth string
	ScapyOK               bool
	// tshark's esp_sa UAT labels; TsharkOK says tshark checks the ICV.
	TsharkEnc, TsharkAuth string
	TsharkOK              bool
}

func gcmSuite(bits, icv int) suite {
	s := suite{Name: fmt.Sprintf("aes%d-gcm-icv%d", bits, icv/8),
		AEAD:      alg{"rfc4106(gcm(aes))", bits/8 + 4, icv},
		TsharkEnc: fmt.Sprintf("AES-GCM with %d octet ICV [RFC4106]", icv/8), TsharkAuth: "NULL", TsharkOK: true}
	if icv == 128 { // scapy 2.5 gets other GCM ICV lengths wrong
		s.ScapyCrypt, s.ScapyOK = "AES-GCM", true
	}
	return s
}

// mac describes an integrity algorithm once for ESP and AH suites.
type mac struct {
	name, linux   string
	keyLen, icv   int
	scapy, tshark string
}

var (
	macSHA1   = mac{"sha1", "hmac(sha1)", 20, 96, "HMAC-SHA1-96", "HMAC-SHA-1-96 [RFC2404]"}
	macSHA256 = mac{"sha256", "hmac(sha256)", 32, 128, "SHA2-256-128", "HMAC-SHA-256-128 [RFC4868]"}
	macSHA384 = mac{"sha384", "hmac(sha384)", 48, 192, "SHA2-384-192", "HMAC-SHA-384-192 [RFC4868]"}
	macSHA512 = mac{"sha512", "hmac(sha512)", 64, 256, "SHA2-512-256", "HMAC-SHA-512-256 [RFC4868]"}
	macMD5    = mac{"md5", "hmac(md5)", 16, 96, "HMAC-MD5-96", "HMAC-MD5-96 [RFC2403]"}
	macXCBC   = mac{"xcbc", "xcbc(aes)", 16, 96, "", ""}
	macCMAC   = mac{"cmac", "cmac(aes)", 16, 96, "AES-CMAC-96", ""}
)

// cipherSuite is Enc with the MAC m; scapyEnc/tsharkEnc name the cipher.
func cipherSuite(name string, enc alg, scapyEnc, tsharkEnc string, m mac) suite {
	return suite{Name: name + "-" + m.name, Enc: enc, Auth: alg{m.linux, m.keyLen, m.icv},
		ScapyCrypt: scapyEnc, ScapyAuth: m.scapy, ScapyOK: scapyEnc != "" && m.scapy != "",
		TsharkEnc: tsharkEnc, TsharkAuth: m.tshark, TsharkOK: tsharkEnc != "" && m.tshark != ""}
}

func ahSuite(m mac) suite {
	return suite{Name: "ah-" + m.name, Auth: alg{m.linux, m.keyLen, m.icv},
		ScapyAuth: m.scapy, ScapyOK: m.scapy != ""}
}

var (
	cbcAES = alg{Name: "cbc(aes)", KeyLen: 16}

	sGCM128   = gcmSuite(128, 128)
	sCBC256   = cipherSuite("aes128-cbc", cbcAES, "AES-CBC", "AES-CBC [RFC3602]", macSHA256)
	sAHSHA256 = ahSuite(macSHA256)

	// espSuites are the ESP algorithms of issue 6.
	espSuites = []suite{
		sGCM128, gcmSuite(128, 96), gcmSuite(128, 64),
		gcmSuite(256, 128), gcmSuite(256, 96), gcmSuite(256, 64),
		{Name: "aes128-gmac", AEAD: alg{"rfc4543(gcm(aes))", 20, 128}},
		{Name: "chacha20-poly1305", AEAD: alg{"rfc7539esp(chacha20,poly1305)", 36, 128}, ScapyCrypt: "CHACHA20-POLY1305", ScapyOK: true},
		{Name: "aes128-ccm-icv16", AEAD: alg{"rfc4309(ccm(aes))", 19, 128}, ScapyCrypt: "AES-CCM", ScapyOK: true},
		cipherSuite("aes128-cbc", cbcAES, "AES-CBC", "AES-CBC [RFC3602]", macSHA1),
		sCBC256,
		cipherSuite("aes128-cbc", cbcAES, "AES-CBC", "AES-CBC [RFC3602]", macSHA384),
		cipherSuite("aes128-cbc", cbcAES, "AES-CBC", "AES-CBC [RFC3602]", macSHA512),
		cipherSuite("aes128-cbc", cbcAES, "AES-CBC", "AES-CBC [RFC3602]", macMD5),
		cipherSuite("aes128-cbc", cbcAES, "AES-CBC", "AES-CBC [RFC3602]", macXCBC),
		cipherSuite("aes128-cbc", cbcAES, "AES-CBC", "AES-CBC [RFC3602]", macCMAC),
		cipherSuite("aes128-ctr", alg{Name: "rfc3686(ctr(aes))", KeyLen: 20}, "AES-CTR", "AES-CTR [RFC3686]", macSHA256),
		cipherSuite("3des-cbc", alg{Name: "cbc(des3_ede)", KeyLen: 24}, "3DES", "TripleDES-CBC [RFC2451]", macSHA1),
		cipherSuite("3des-cbc", alg{Name: "cbc(des3_ede)", KeyLen: 24}, "3DES", "TripleDES-CBC [RFC2451]", macMD5),
		cipherSuite("des-cbc", alg{Name: "cbc(des)", KeyLen: 8}, "DES", "DES-CBC [RFC2405]", macSHA1),
		cipherSuite("des-cbc", alg{Name: "cbc(des)", KeyLen: 8}, "DES", "DES-CBC [RFC2405]", macMD5),
		cipherSuite("null", alg{Name: "ecb(cipher_null)"}, "NULL", "NULL", macSHA256),
	}
	ahSuites = []suite{ahSuite(macSHA1), sAHSHA256, ahSuite(macSHA512), ahSuite(macMD5), ahSuite(macXCBC), ahSuite(macCMAC)}
)

// xform is one SA of a case's bundle.
type xform struct {
	Proto xfrm.Proto
	S     suite // unused for IPComp (deflate)
}

// linuxCase is one row of the interop matrix: a bundle of transforms (in
// bundle order: first applied first on output), a mode and families, and
// the extra traffic it carries.
type linuxCase struct {
	Group string
	X     []xform
	Mode  xfrm.Mode
	Inner int // family of the protected traffic
	Outer int // family of the tunnel (tunnel mode)
	ESN   bool
	// Window is the replay window (default 128).
	Window uint32
	// NDP protects neighbour discovery with ESP (multicast SAs to the
	// solicited-node addresses) instead of bypassing it.
	NDP bool
	// ExtHdrs adds UDP with hop-by-hop and destination options both ways.
	ExtHdrs bool
	// Encap puts the ESP SAs inside UDP 4500 on both sides (RFC 3948;
	// Linux's `encap espinudp 4500 4500`), see natt_test.go.
	Encap bool
}

func (c linuxCase) window() uint32 {
	if c.Window == 0 {
		return 128
	}
	return c.Window
}

func (c linuxCase) modeFam() string {
	if c.Mode == xfrm.ModeTransport {
		return fmt.Sprintf("transport-v%d", c.Inner)
	}
	return fmt.Sprintf("tunnel-%din%d", c.Inner, c.Outer)
}

func (c linuxCase) suiteName() string {
	var p []string
	for _, x := range c.X {
		switch x.Proto {
		case xfrm.ProtoIPComp:
			p = append(p, "ipcomp-deflate")
		case xfrm.ProtoAH:
			p = append(p, x.S.Name)
		default:
			p = append(p, "esp-"+x.S.Name)
		}
	}
	s := strings.Join(p, "+")
	if c.ESN {
		s += fmt.Sprintf("+esn-w%d", c.window())
	} else if c.Window != 0 {
		s += fmt.Sprintf("+w%d", c.Window)
	}
	return s
}

// Name is the subtest name: group/suite/mode-family[+extras].
func (c linuxCase) Name() string {
	n := c.Group + "/" + c.suiteName() + "/" + c.modeFam()
	if c.NDP {
		n += "+ndp"
	}
	if c.ExtHdrs {
		n += "+exthdr"
	}
	if c.Encap {
		n += "+udpencap"
	}
	return n
}

// main is the outermost ESP or AH SA (the one replays and scapy use).
func (c linuxCase) main() xform { return c.X[len(c.X)-1] }

// single tells whether the case has one SA per direction.
func (c linuxCase) single() bool { return len(c.X) == 1 }

type modeFam struct {
	mode         xfrm.Mode
	inner, outer int
}

var (
	transportV6 = modeFam{xfrm.ModeTransport, 6, 0}
	transportV4 = modeFam{xfrm.ModeTransport, 4, 0}
	tunnel6in6  = modeFam{xfrm.ModeTunnel, 6, 6}
	tunnel4in4  = modeFam{xfrm.ModeTunnel, 4, 4}
	tunnel4in6  = modeFam{xfrm.ModeTunnel, 4, 6}
	tunnel6in4  = modeFam{xfrm.ModeTunnel, 6, 4}
)

func mk(group string, mf modeFam, xs ...xform) linuxCase {
	return linuxCase{Group: group, X: xs, Mode: mf.mode, Inner: mf.inner, Outer: mf.outer}
}

func espX(s suite) xform { return xform{xfrm.ProtoESP, s} }
func ahX(s suite) xform  { return xform{xfrm.ProtoAH, s} }

var compX = xform{Proto: xfrm.ProtoIPComp}

// matrix is the whole interop matrix of issue 6. Every ESP algorithm runs
// in transport IPv6 and tunnel 4-in-4; AES-GCM-128 and AES-CBC/HMAC-SHA256
// run the full mode/family grid; AH runs every MAC in transport IPv6 (with
// extension headers) and IPv4, and HMAC-SHA256 in both tunnels; bundles,
// ESN and NDP under ESP follow.
func matrix() []linuxCase {
	var cs []linuxCase
	for _, s := range espSuites {
		cs = append(cs, mk("esp", transportV6, espX(s)), mk("esp", tunnel4in4, espX(s)))
	}
	for _, s := range []suite{sGCM128, sCBC256} {
		for _, mf := range []modeFam{transportV4, tunnel6in6, tunnel4in6, tunnel6in4} {
			cs = append(cs, mk("grid", mf, espX(s)))
		}
	}
	for _, s := range ahSuites {
		c := mk("ah", transportV6, ahX(s))
		c.ExtHdrs = true
		cs = append(cs, c, mk("ah", transportV4, ahX(s)))
	}
	cs = append(cs, mk("ah", tunnel6in6, ahX(sAHSHA256)), mk("ah", tunnel4in4, ahX(sAHSHA256)))
	ahesp := mk("bundle", transportV6, espX(sGCM128), ahX(sAHSHA256))
	ahesp.ExtHdrs = true
	cs = append(cs, ahesp,
		mk("bundle", transportV4, espX(sGCM128), ahX(sAHSHA256)),
		mk("bundle", transportV6, compX, espX(sCBC256)),
		mk("bundle", transportV4, compX, espX(sGCM128)))
	for _, e := range []struct {
		s  suite
		w  uint32
		mf modeFam
	}{{sGCM128, 128, tunnel4in4}, {sGCM128, 4096, transportV6}, {sCBC256, 128, transportV6}, {sCBC256, 4096, tunnel4in4}} {
		c := mk("esn", e.mf, espX(e.s))
		c.ESN, c.Window = true, e.w
		cs = append(cs, c)
	}
	for _, s := range []suite{sGCM128, sCBC256} {
		c := mk("ndp", transportV6, espX(s))
		c.NDP = true
		cs = append(cs, c)
	}
	return append(cs, encapCases()...)
}

// missing says which of the case's algorithms our tables lack ("" if none),
// so that cases for algorithms still being added skip rather than fail.
func (c linuxCase) missing() string {
	var miss []string
	for _, x := range c.X {
		s := x.S
		switch x.Proto {
		case xfrm.ProtoIPComp:
			if _, err := ipcomp.New("deflate", 0); err != nil {
				miss = append(miss, "deflate: "+err.Error())
			}
			continue
		case xfrm.ProtoAH:
			if _, err := esp.Lookup(esp.KindIntegrity, s.Auth.Name, s.Auth.ICV); err != nil {
				miss = append(miss, err.Error())
			}
			continue
		}
		if s.AEAD.Name != "" {
			if _, err := esp.Lookup(esp.KindAEAD, s.AEAD.Name, s.AEAD.ICV); err != nil {
				miss = append(miss, err.Error())
			}
			continue
		}
		if _, err := esp.Lookup(esp.KindEncryption, s.Enc.Name, 0); err != nil {
			miss = append(miss, err.Error())
		}
		if _, err := esp.Lookup(esp.KindIntegrity, s.Auth.Name, s.Auth.ICV); err != nil {
			miss = append(miss, err.Error())
		}
	}
	return strings.Join(miss, "; ")
}

// SPIs: one per protocol and direction; IPComp's CPI is 16 bits.
func spiOut(p xfrm.Proto) uint32 { return 0x1000 + uint32(p) } // stack -> guest
func spiIn(p xfrm.Proto) uint32  { return 0x2000 + uint32(p) } // guest -> stack

// NDP multicast SAs (to the peer's solicited-node address).
const (
	spiNDPStack = 0x3001 // stack -> ff02::1:ffXX:XXXX of the guest
	spiNDPGuest = 0x4001 // guest -> ff02::1:ffXX:XXXX of the stack
)

// keyFor derives the key of one slot of an SA (distinct per SPI and slot).
func keyFor(spi uint32, slot byte, n int) []byte {
	var seed [6]byte
	binary.BigEndian.PutUint32(seed[:], spi)
	seed[4], seed[5] = slot, byte(n)
	var out []byte
	for i := 0; len(out) < n; i++ {
		h := sha256.Sum256(append(seed[:], byte(i)))
		out = append(out, h[:]...)
	}
	return out[:n]
}

const (
	slotEnc  = 'e'
	slotAuth = 'a'
)

// saKeys returns the keys of an SA for the suite.
func (s suite) keys(spi uint32) (aead, enc, auth []byte) {
	if s.AEAD.Name != "" {
		return keyFor(spi, slotEnc, s.AEAD.KeyLen), nil, nil
	}
	if s.Enc.Name != "" {
		enc = keyFor(spi, slotEnc, s.Enc.KeyLen)
	}
	return nil, enc, keyFor(spi, slotAuth, s.Auth.KeyLen)
}

// solicitedNode returns ff02::1:ffXX:XXXX for a.
func solicitedNode(a netip.Addr) netip.Addr {
	b := a.As16()
	sn := [16]byte{0xff, 0x02, 10: 0, 11: 1, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]}
	return netip.AddrFrom16(sn)
}
