package main

import (
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/esp"
)

// keylog writes a Wireshark ESP SA table ("esp_sa" UAT file) for every ESP
// SA the stack has: all SAs at start, then each new one as it appears. The
// SAD has no add event, so the writer watches its change generation (every
// SA change invalidates the SPD flow cache) and walks the SAD when it moved.
//
// Each line is the eight UAT fields, quoted and comma-separated:
//
//	"IPv6","src","dst","0xSPI","<encryption>","0x<key>","<authentication>","0x<key>"
//
// with algorithm names spelled exactly as Wireshark's packet-ipsec.c
// (esp_encryption_type_vals / esp_authentication_type_vals) has them; the
// key includes the AEAD or CTR salt/nonce. See wiresharkEnc/wiresharkAuth
// for the mapping. An SA whose algorithm Wireshark cannot decrypt (CCM,
// GMAC, ChaCha20-Poly1305 in tshark 4.0, ESN) is written as a '#' comment
// line, so the file still loads. ESN SAs are listed but Wireshark 4.0 checks
// them with 32-bit sequence numbers only.
//
// A UDP-encapsulated SA (NAT traversal, RFC 3948) gets the same line as a
// plain one: Wireshark's UDPENCAP dissector (packet-ipsec-udp.c) hands
// the datagram's payload to the ESP dissector with the outer IP addresses
// unchanged, so the esp_sa entry matches on the SA's addresses and SPI as
// for plain ESP, and the UDP ports play no part in it. tshark 4.0 needs no
// option when either port is 4500: UDPENCAP is registered on udp.port
// 4500 and tells IKE (non-ESP marker) and NAT keepalives (0xFF) from ESP.
// An SA on other ports (e.g. "esp-udp" with [4501] on both addresses)
// needs `-d udp.port==4501,udpencap` (udp.try_heuristic_first does not
// help: UDPENCAP is not a heuristic dissector). Checked with tshark 4.0.17
// on AES-GCM ESP-in-UDP made by scapy: ports 4500/4500, 61234/4500 (a NAT's
// rewrite) and 1812/4500 (a lower port with a dissector of its own, which
// Wireshark tries first and which declines) decrypt with esp.icv_good and
// this line; 4501/4501 only with -d. The addresses are the SA's: a capture
// taken on the far side of a NAT sees the NAT's public address instead,
// and its line must be edited (Wireshark accepts "*" for any address).
// An SA whose peer floated to a new address keeps its original line.
type keylog struct {
	f    *os.File
	eng  *xfrm.Engine
	log  *slog.Logger
	mu   sync.Mutex
	seen map[*xfrm.SA]bool
	gen  uint64
}

func openKeylog(path string, eng *xfrm.Engine, log *slog.Logger) (*keylog, error) {
	f, err := createPrivate(path) // 0600, no links, never another's file: it holds keys
	if err != nil {
		return nil, err
	}
	k := &keylog{f: f, eng: eng, log: log, seen: map[*xfrm.SA]bool{}}
	fmt.Fprintf(f, "# ipsecstack ESP SAs for Wireshark (esp_sa UAT). Keep secret.\n")
	k.sync()
	return k, nil
}

// sync writes every usable SA not yet written.
func (k *keylog) sync() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.f == nil {
		return
	}
	gen := k.eng.SPD.Generation()
	if gen == k.gen && len(k.seen) > 0 {
		return
	}
	k.gen = gen
	// seen is rebuilt from the SAD each time: SAs deleted or rekeyed away
	// are forgotten, so it stays the size of the SAD.
	seen := make(map[*xfrm.SA]bool, len(k.seen))
	defer func() { k.seen = seen }()
	k.eng.SAD.Walk(func(sa *xfrm.SA) bool {
		if k.seen[sa] {
			seen[sa] = true
			return true
		}
		if sa.Config.Proto != xfrm.ProtoESP {
			return true
		}
		if sa.State() == xfrm.StateLarval || !sa.Hold() { // a dead SA's keys are being wiped
			return true
		}
		line := keylogLine(&sa.Config)
		sa.Release()
		if _, err := k.f.WriteString(line + "\n"); err != nil {
			k.log.Error("keylog write", "err", err)
			return false
		}
		seen[sa] = true
		k.log.Debug("keylog: SA written", "spi", fmt.Sprintf("0x%08x", sa.Config.SPI), "dst", sa.Config.Dst.String())
		return true
	})
}

func (k *keylog) Close() {
	k.sync()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.f != nil {
		k.f.Close()
		k.f = nil
	}
}

// keylogLine formats one SA; unsupported algorithms give a comment line.
func keylogLine(c *xfrm.SAConfig) string {
	fam := "IPv6"
	if c.Src.Is4() {
		fam = "IPv4"
	}
	enc, encKey, auth, authKey, why := wiresharkAlgs(c)
	line := fmt.Sprintf("%q,%q,%q,\"0x%08x\",%q,%q,%q,%q", fam, c.Src.String(), c.Dst.String(), c.SPI,
		enc, hexKey(encKey), auth, hexKey(authKey))
	if why != "" {
		return "# " + why + ": " + line
	}
	return line
}

func hexKey(k []byte) string {
	if len(k) == 0 {
		return ""
	}
	return "0x" + hex.EncodeToString(k)
}

// wiresharkAlgs maps an SA's algorithms to Wireshark's names. why is set
// when Wireshark cannot decrypt or check the SA.
func wiresharkAlgs(c *xfrm.SAConfig) (enc string, encKey []byte, auth string, authKey []byte, why string) {
	auth = "NULL"
	if c.AEAD.Name != "" {
		info, err := esp.Lookup(esp.KindAEAD, c.AEAD.Name, c.AEAD.ICVBits)
		if err != nil {
			return "?", nil, auth, nil, err.Error()
		}
		enc = wiresharkEnc[encKeyName{info.LinuxName, info.ICVLen}]
		if enc == "" {
			return info.LinuxName, nil, auth, nil, "Wireshark 4.0 cannot decrypt " + info.LinuxName
		}
		encKey = c.AEAD.Key
	} else {
		name := c.Enc.Name
		if name == "" {
			name = "null"
		}
		info, err := esp.Lookup(esp.KindEncryption, name, 0)
		if err != nil {
			return "?", nil, auth, nil, err.Error()
		}
		enc = wiresharkEnc[encKeyName{info.LinuxName, 0}]
		if enc == "" {
			return info.LinuxName, nil, auth, nil, "Wireshark cannot decrypt " + info.LinuxName
		}
		encKey = c.Enc.Key
		if c.Auth.Name != "" {
			ai, err := esp.Lookup(esp.KindIntegrity, c.Auth.Name, c.Auth.ICVBits)
			if err != nil {
				return enc, encKey, "?", nil, err.Error()
			}
			auth = wiresharkAuth[encKeyName{ai.LinuxName, ai.ICVLen}]
			if auth == "" {
				// Decryptable, but the ICV cannot be checked.
				auth = fmt.Sprintf("ANY %d bit authentication [no checking]", ai.ICVLen*8)
				if ai.ICVLen != 8 && ai.ICVLen != 12 && ai.ICVLen != 16 && ai.ICVLen != 24 && ai.ICVLen != 32 /* Wireshark's ANY 64/96/128/192/256 */ {
					return enc, encKey, ai.LinuxName, nil, "Wireshark cannot handle " + ai.LinuxName
				}
			} else {
				authKey = c.Auth.Key
			}
		}
	}
	if c.ESN {
		why = "ESN (Wireshark 4.0 assumes 32-bit sequence numbers)"
	}
	return enc, encKey, auth, authKey, why
}

type encKeyName struct {
	linux  string
	icvLen int
}

// wiresharkEnc: Linux xfrm name (+ ICV length for AEADs) → Wireshark's
// esp_encryption_type_vals string.
var wiresharkEnc = map[encKeyName]string{
	{"ecb(cipher_null)", 0}:   "NULL",
	{"cbc(des3_ede)", 0}:      "TripleDES-CBC [RFC2451]",
	{"cbc(aes)", 0}:           "AES-CBC [RFC3602]",
	{"rfc3686(ctr(aes))", 0}:  "AES-CTR [RFC3686]",
	{"cbc(des)", 0}:           "DES-CBC [RFC2405]",
	{"rfc4106(gcm(aes))", 8}:  "AES-GCM with 8 octet ICV [RFC4106]",
	{"rfc4106(gcm(aes))", 12}: "AES-GCM with 12 octet ICV [RFC4106]",
	{"rfc4106(gcm(aes))", 16}: "AES-GCM with 16 octet ICV [RFC4106]",
	// Wireshark ≥ 4.2 has "ChaCha20 with Poly1305 [RFC7634]"; 4.0 (Debian
	// 12) rejects the whole UAT file on an unknown name, so it is left out.
}

// wiresharkAuth: Linux xfrm name + ICV length → Wireshark's
// esp_authentication_type_vals string.
var wiresharkAuth = map[encKeyName]string{
	{"hmac(sha1)", 12}:   "HMAC-SHA-1-96 [RFC2404]",
	{"hmac(sha256)", 12}: "HMAC-SHA-256-96 [draft-ietf-ipsec-ciph-sha-256-00]",
	{"hmac(sha256)", 16}: "HMAC-SHA-256-128 [RFC4868]",
	{"hmac(sha384)", 24}: "HMAC-SHA-384-192 [RFC4868]",
	{"hmac(sha512)", 32}: "HMAC-SHA-512-256 [RFC4868]",
	{"hmac(md5)", 12}:    "HMAC-MD5-96 [RFC2403]",
}
