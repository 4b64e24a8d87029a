package swanctl

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	m "github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

func mustParse(t *testing.T, text string) *config.Config {
	t.Helper()
	cfg, err := Parse(filepath.Join(t.TempDir(), "swanctl.conf"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRejected covers every rejection: each unsupported option, value and
// section gives one line "file:line: what" naming the option.
func TestRejected(t *testing.T) {
	conn := func(body string) string {
		return "connections {\n c {\n" + body + "\n }\n}\n"
	}
	child := func(body string) string {
		return conn("  children {\n   x {\n" + body + "\n   }\n  }")
	}
	local := func(body string) string { return conn("  local {\n" + body + "\n  }") }
	tests := []struct {
		name, text string
		line       int
		want       string
	}{
		{"top-level key", "a = b\n", 1, `unknown top-level option "a"`},
		{"top-level section", "\nfoo { }\n", 2, `unknown top-level section "foo"`},
		{"pools", "pools { p { addrs = 10.0.0.0/24 } }\n", 1, "pools (virtual IP address pools) are not supported"},
		{"key in connections", "connections { a = b }\n", 1, `connections: unexpected option "a"`},
		{"unknown conn option", conn("  foo = bar"), 3, `unknown connection option "foo"`},
		{"version 1", conn("  version = 1"), 3, "version: IKE version 1 is not supported"},
		{"version 0", conn("  version = 0"), 3, "version: IKE version 0 is not supported"},
		{"mobike", conn("  mobike = yes"), 3, "connection option mobike = yes is not supported by ipsecstack"},
		{"aggressive", conn("  aggressive = yes"), 3, "aggressive = yes is not supported"},
		{"pull", conn("  pull = no"), 3, "pull = no is not supported"},
		{"vips", conn("  vips = 0.0.0.0"), 3, "vips = 0.0.0.0 is not supported"},
		{"conn pools", conn("  pools = p"), 3, "pools = p is not supported"},
		{"dpd_timeout", conn("  dpd_timeout = 30s"), 3, "dpd_timeout = 30s is not supported"},
		{"childless", conn("  childless = force"), 3, "childless = force is not supported"},
		{"ppk", conn("  ppk_id = x"), 3, "ppk_id = x is not supported"},
		{"dscp", conn("  dscp = 101110"), 3, "dscp = 101110 is not supported"},
		{"if_id", conn("  if_id_in = 42"), 3, "if_id_in = 42 is not supported"},
		{"mediation", conn("  mediation = yes"), 3, "mediation = yes is not supported"},
		{"reauth", conn("  reauth_time = 1h"), 3, "reauth_time: reauthentication is not supported"},
		{"bad bool", conn("  encap = maybe"), 3, `encap: "maybe" is not yes or no`},
		{"bad time", conn("  rekey_time = 1w"), 3, `rekey_time: "1w" is not a time`},
		{"bad port", conn("  local_port = 70000"), 3, `local_port: bad port "70000"`},
		{"bad enum", conn("  fragmentation = sometimes"), 3, `fragmentation: "sometimes" is not one of accept, force, no, yes`},
		{"hostname", conn("  remote_addrs = moon.strongswan.org"), 3, `remote_addrs: "moon.strongswan.org" is not an address or subnet (hostnames are not resolved by ipsecstack)`},
		{"addr range", conn("  remote_addrs = 10.0.0.1-10.0.0.9"), 3, `address range "10.0.0.1-10.0.0.9" is not supported`},
		{"proposal typo", conn("  proposals = aes128-sha265-x25519"), 3, `proposals: "aes128-sha265-x25519": algorithm "sha265" not recognized`},
		{"proposal modp3072", conn("  proposals = aes128-sha256-modp3072"), 3, "MODP_3072 is not supported by ipsecstack for IKE"},
		{"proposal camellia", conn("  proposals = camellia-sha256-x25519"), 3, `algorithm "camellia": not implemented by ipsecstack`},
		{"proposal ntru", conn("  proposals = aes-sha256-ntru128"), 3, `algorithm "ntru128": a strongSwan private-use algorithm`},
		{"proposal no prf", conn("  proposals = aes128gcm16-x25519"), 3, "a PRF algorithm is mandatory in IKE proposals"},
		{"proposal no ke", conn("  proposals = aes128-sha256"), 3, "a key exchange method (DH group) is mandatory"},
		{"proposal mixed aead", conn("  proposals = aes128-aes128gcm16-sha256-x25519"), 3, "classic and combined-mode (AEAD)"},
		{"proposal no integ", conn("  proposals = aes128-prfsha256-x25519"), 3, "an integrity algorithm is mandatory"},
		{"proposal no encr", conn("  proposals = sha256-x25519"), 3, "an encryption algorithm is mandatory in IKE proposals"},
		{"proposal esn in ike", conn("  proposals = aes128-sha256-x25519-esn"), 3, "esn/noesn are for ESP proposals"},
		{"proposal gcm8 ike", conn("  proposals = aes128gcm8-prfsha256-x25519"), 3, "AES_GCM_8_128 is not supported by ipsecstack for IKE"},
		{"proposal ctr ike", conn("  proposals = aes128ctr-sha256-x25519"), 3, "AES_CTR_128 is not supported by ipsecstack for IKE"},
		{"proposal cmac integ ike", conn("  proposals = aes128-aescmac-x25519"), 3, "AES_CMAC_96 is not supported by ipsecstack for IKE"},
		{"proposal empty", conn("  proposals = ,"), 3, "proposals: no proposal"},
		{"unknown conn section", conn("  foo { }"), 3, `unknown connection section "foo"`},
		{"two local rounds", conn("  local { auth = psk }\n  local-2 { auth = psk }"), 4, "multiple authentication rounds (RFC 4739, local and local-2) are not supported"},
		{"two remote rounds by round", conn("  remote-b { round = 2 }\n  remote-a { round = 1 }"), 3, "multiple authentication rounds (RFC 4739, remote-a and remote-b)"},
		{"eap", local("   auth = eap-tls"), 4, `auth: "eap-tls": EAP authentication is not supported`},
		{"xauth", local("   auth = xauth"), 4, "XAUTH authentication is not supported"},
		{"ike: constraints", local("   auth = ike:rsa-sha256"), 4, "separate IKE signature constraints (ike:)"},
		{"ed25519 alone", local("   auth = ed25519"), 4, "strongSwan 5.9.8 does not accept this auth value"},
		{"key strength", local("   auth = rsa-2048"), 4, "key strength constraints (2048)"},
		{"bad scheme", local("   auth = ecdsa-md5"), 4, `unknown or unsupported signature scheme "md5"`},
		{"scheme mismatch", local("   auth = ecdsa-identity"), 4, "scheme identity does not go with that key type"},
		{"pss sha1", local("   auth = rsa/pss-sha1"), 4, "scheme sha1 does not go with that key type"},
		{"bliss", local("   auth = bliss"), 4, "BLISS is not supported"},
		{"unknown auth", local("   auth = magic"), 4, `"magic" is not psk, pubkey, rsa or ecdsa`},
		{"pubkeys", local("   pubkeys = moonPub.pem"), 4, "authentication option pubkeys = moonPub.pem is not supported"},
		{"eap_id", local("   eap_id = %any"), 4, "eap_id = %any is not supported"},
		{"groups", local("   groups = g"), 4, "groups = g is not supported"},
		{"revocation", local("   revocation = strict"), 4, "revocation = strict is not supported"},
		{"cert_policy", local("   cert_policy = 1.3.6.1"), 4, "cert_policy = 1.3.6.1 is not supported"},
		{"unknown auth option", local("   foo = 1"), 4, "foo: unknown authentication option"},
		{"missing cert", local("   certs = nothere.pem"), 4, "certs: loading "},
		{"cert not a regular file", local("   certs = /dev/zero"), 4, "/dev/zero: not a regular file"},
		{"include not a regular file", "\ninclude /dev/zero\n", 2, `include "/dev/zero": not a regular file`},
		{"pkcs11 cert", local("   cert-1 { handle = 0a }"), 4, "handle: PKCS#11 tokens are not supported"},
		{"cert section without file", local("   cert-1 { }"), 4, "cert-1: file missing"},
		{"unknown auth section", local("   foo { }"), 4, `unknown authentication section "foo"`},
		{"subnet id", local("   id = 10.0.0.0/24"), 4, "IKEv1 subnet or range identity"},
		{"range id", local("   id = ipv4range:10.0.0.1-10.0.0.2"), 4, "identity type ipv4range has no IKEv2 encoding"},
		{"bad ipv4 id", local("   id = ipv4:moon"), 4, `"moon" is not an IPv4 address`},
		{"bad numeric id", local("   id = \"{4}:x\""), 4, "identity type 4 is not an IKEv2 identity type"},
		{"bad dn hex", local("   id = \"asn1dn:#3003\""), 4, "is not one DER value"},
		{"empty fqdn", local("   id = \"@\""), 4, `empty FQDN identity "@"`},
		{"non-ascii", local("   id = \"CN=\xc3\xa4\""), 4, "id: value is not printable ASCII"},
		{"unknown child option", child("    foo = 1"), 5, `unknown CHILD_SA option "foo"`},
		{"updown", child("    updown = /bin/true"), 5, "CHILD_SA option updown = /bin/true is not supported"},
		{"hostaccess", child("    hostaccess = yes"), 5, "hostaccess = yes is not supported"},
		{"policies", child("    policies = no"), 5, "policies = no is not supported"},
		{"ipcomp", child("    ipcomp = yes"), 5, "ipcomp = yes is not supported"},
		{"inactivity", child("    inactivity = 30s"), 5, "inactivity = 30s is not supported"},
		{"mark_in", child("    mark_in = 42"), 5, "mark_in = 42 is not supported"},
		{"mark_out", child("    mark_out = %unique"), 5, "mark_out = %unique is not supported"},
		{"set_mark_in", child("    set_mark_in = 1"), 5, "set_mark_in = 1 is not supported"},
		{"tfc", child("    tfc_padding = mtu"), 5, "tfc_padding = mtu is not supported"},
		{"priority", child("    priority = 10"), 5, "priority = 10 is not supported"},
		{"interface", child("    interface = eth0"), 5, "interface = eth0 is not supported"},
		{"hw_offload", child("    hw_offload = yes"), 5, "hw_offload = yes is not supported"},
		{"sha256_96", child("    sha256_96 = yes"), 5, "sha256_96 = yes is not supported"},
		{"copy_df", child("    copy_df = no"), 5, "copy_df = no is not supported"},
		{"copy_ecn", child("    copy_ecn = no"), 5, "copy_ecn = no is not supported"},
		{"copy_dscp", child("    copy_dscp = yes"), 5, "copy_dscp = yes is not supported"},
		{"child if_id", child("    if_id_out = 1"), 5, "if_id_out = 1 is not supported"},
		{"label", child("    label = system_u:object_r:ipsec_spd_t:s0"), 5, "label = system_u:object_r:ipsec_spd_t:s0 is not supported"},
		{"ah", child("    ah_proposals = sha256"), 5, "ah_proposals = sha256 is not supported"},
		{"mode pass", child("    mode = pass"), 5, "mode pass is not supported by ipsecstack"},
		{"mode drop", child("    mode = drop"), 5, "mode drop is not supported"},
		{"mode beet", child("    mode = beet"), 5, "mode beet is not supported"},
		{"mode proxy", child("    mode = transport_proxy"), 5, "mode transport_proxy is not supported"},
		{"bad mode", child("    mode = tunel"), 5, `"tunel" is not a mode`},
		{"start_action", child("    start_action = trap|start"), 5, `start_action: "trap|start" is not one of`},
		{"esp no encr", child("    esp_proposals = sha256"), 5, "an encryption algorithm is mandatory in ESP proposals"},
		{"esp unsupported ke", child("    esp_proposals = aes128gcm16-ecp521"), 5, "ECP_521 is not supported by ipsecstack for ESP"},
		{"esp blowfish", child("    esp_proposals = blowfish-sha256"), 5, `algorithm "blowfish": not implemented`},
		{"bad ts", child("    local_ts = 10.0.0.0/33"), 5, `local_ts: "10.0.0.0/33": "10.0.0.0/33": bad prefix length "33"`},
		{"ts hostname", child("    remote_ts = moon"), 5, `"moon" is not an IP address`},
		{"ts proto", child("    remote_ts = 10.0.0.0/8[nosuchproto]"), 5, `unknown protocol "nosuchproto"`},
		{"ts port", child("    remote_ts = 10.0.0.0/8[tcp/99999]"), 5, `bad port "99999"`},
		{"ts bracket", child("    remote_ts = 10.0.0.0/8[tcp"), 5, "missing ']'"},
		{"ts range order", child("    remote_ts = 10.0.0.9-10.0.0.1"), 5, "ends below its start"},
		{"ts range families", child("    remote_ts = 10.0.0.1-fec0::1"), 5, "mixes IPv4 and IPv6"},
		{"bad bytes", child("    rekey_bytes = 1t"), 5, `rekey_bytes: "1t" is not a byte count`},
		{"child subsection", child("    foo { }"), 5, `unknown CHILD_SA section "foo"`},
		{"key in children", conn("  children { a = b }"), 3, `children: unexpected option "a"`},
		{"child twice", conn("  children { a { } }\n  Children {\n a { } }"), 5, "child a is defined twice (also at "},
		{"secret key", "secrets { a = b }\n", 1, `secrets: unexpected option "a"`},
		{"secret type", "secrets {\n eap-x { secret = y } }\n", 2, `secret type of "eap-x" is not supported`},
		{"secret xauth", "secrets {\n xauth { secret = y } }\n", 2, `secret type of "xauth" is not supported`},
		{"secret ppk", "secrets {\n ppk1 { secret = y } }\n", 2, `secret type of "ppk1" is not supported`},
		{"secret unknown", "secrets {\n foo { secret = y } }\n", 2, `unknown secret type "foo"`},
		{"secret missing", "secrets {\n ike-1 { id = x } }\n", 2, "secret ike-1: secret missing"},
		{"secret empty", "secrets {\n ike-1 { secret = \"\" } }\n", 2, "secret ike-1: empty secret"},
		{"secret bad hex", "secrets {\n ike-1 {\n secret = 0xzz } }\n", 3, `secret: bad hex "zz"`},
		{"secret bad base64", "secrets {\n ike-1 {\n secret = 0s!! } }\n", 3, "secret: bad base64"},
		{"secret option", "secrets {\n ike-1 {\n secret = x\n foo = 1 } }\n", 4, `unknown option "foo" in secret ike-1`},
		{"private file missing", "secrets {\n private-1 {\n file = nothere.pem } }\n", 3, "file: "},
		{"private no file", "secrets {\n private-1 { secret = x } }\n", 2, "secret private-1: file missing"},
		{"authority pkcs11", "authorities {\n a {\n handle = 01 } }\n", 3, "handle: PKCS#11 tokens are not supported"},
		{"authority crl", "authorities {\n a {\n crl_uris = http://x } }\n", 3, "crl_uris: revocation checking"},
		{"authority empty", "authorities {\n a { } }\n", 2, "authority a: cacert missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "swanctl.conf")
			_, err := Parse(file, []byte(tt.text))
			if err == nil {
				t.Fatalf("accepted, want %q", tt.want)
			}
			msg := err.Error()
			prefix := file + ":" + itoa(tt.line) + ": "
			if !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q, want %q...%q", msg, prefix, tt.want)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q has more than one line", msg)
			}
		})
	}
}

func itoa(i int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(i)) }

func fmtInt(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// TestAcceptedNoOps: strongSwan options whose value asks for what
// ipsecstack does anyway are accepted.
func TestAcceptedNoOps(t *testing.T) {
	mustParse(t, `connections { c {
  mobike = no
  aggressive = no
  pull = yes
  dpd_timeout = 0
  childless = never
  ppk_required = no
  if_id_in = 0
  local { auth = psk
          revocation = relaxed }
  children { x {
    hostaccess = no
    policies = yes
    policies_fwd_out = no
    ipcomp = no
    inactivity = 0
    mark_in = 0/0
    tfc_padding = 0
    priority = 0
    hw_offload = no
    sha256_96 = false
    copy_df = yes
    copy_ecn = 1
    copy_dscp = out
    label_mode = system
  } }
} }
`)
}

func TestConnectionValues(t *testing.T) {
	cfg := mustParse(t, `connections {
  base {
    version = 2
    local_addrs = 192.168.0.1, fd00::1/64
    remote_addrs = %any4, %any6
    remote_port = 4500
    encap = yes
    fragmentation = accept
    dpd_delay = 1m
    rekey_time = 1d
    keyingtries = 3
    unique = keep
    send_certreq = no
    send_cert = never
    local { auth = pubkey-sha384-sha256 }
    remote { auth = rsa/pss-sha512
             id = "C=CH, O=strongSwan, CN=moon" }
    children {
      c { local_ts = 10.1.0.0/16, 10.1.0.1-10.1.0.20[udp/domain]
          remote_ts = dynamic[icmp/2048]
          mode = transport
          start_action = route
          close_action = restart
          rekey_time = 10m
          rekey_bytes = 10k
          life_packets = 5 }
    }
  }
  any { remote_addrs = %any, 10.0.0.1 }
}`)
	c := cfg.Connections[0]
	if got, want := c.LocalAddrs, []netip.Prefix{netip.MustParsePrefix("192.168.0.1/32"), netip.MustParsePrefix("fd00::/64")}; !equalPrefixes(got, want) {
		t.Errorf("LocalAddrs %v, want %v", got, want)
	}
	if got, want := c.RemoteAddrs, []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}; !equalPrefixes(got, want) {
		t.Errorf("RemoteAddrs %v, want %v", got, want)
	}
	if cfg.Connections[1].RemoteAddrs != nil {
		t.Errorf("%%any in a list: RemoteAddrs %v, want any (nil)", cfg.Connections[1].RemoteAddrs)
	}
	if c.LocalPort != 500 || c.RemotePort != 4500 || !c.Encap || c.Fragmentation != config.FragmentationAccept ||
		c.DPDDelay != time.Minute || c.KeyingTries != 3 || c.Unique != config.UniqueKeep || c.SendCertReq || c.SendCert != config.SendCertNever {
		t.Errorf("connection %+v", c)
	}
	// vici_config.c: over_time = rekey/10, rand_time = min(over, rekey/2).
	if c.RekeyTime != 24*time.Hour || c.OverTime != 144*time.Minute || c.RandTime != 144*time.Minute {
		t.Errorf("times %v %v %v", c.RekeyTime, c.OverTime, c.RandTime)
	}
	l, r := c.Local[0], c.Remote[0]
	if l.Method != config.AuthPubkey || l.KeyType != config.KeyAny || !equalU16(l.Schemes, []uint16{hashSHA384, hashSHA256}) {
		t.Errorf("local auth %+v", l)
	}
	if r.KeyType != config.KeyRSAPSS || !equalU16(r.Schemes, []uint16{hashSHA512}) || r.ID.Type != m.ID_DER_ASN1_DN {
		t.Errorf("remote auth %+v", r)
	}
	ch := c.Children[0]
	if ch.Mode != xfrm.ModeTransport || ch.StartAction != config.StartTrap || ch.CloseAction != config.ActionRestart {
		t.Errorf("child %+v", ch)
	}
	// check_lifetimes: life = rekey*110/100, rand = life - rekey.
	if ch.RekeyTime != 10*time.Minute || ch.LifeTime != 11*time.Minute || ch.RandTime != time.Minute {
		t.Errorf("child times %v %v %v", ch.RekeyTime, ch.LifeTime, ch.RandTime)
	}
	if ch.RekeyBytes != 10240 || ch.LifeBytes != 11264 || ch.RandBytes != 1024 || ch.RekeyPackets != 0 || ch.LifePackets != 5 || ch.RandPackets != 5 {
		t.Errorf("child volumes %+v", ch)
	}
	wantTS := []m.TrafficSelector{
		{TSType: m.TS_IPV4_ADDR_RANGE, StartPort: 0, EndPort: 0xffff, Start: netip.MustParseAddr("10.1.0.0"), End: netip.MustParseAddr("10.1.255.255")},
		{TSType: m.TS_IPV4_ADDR_RANGE, IPProto: 17, StartPort: 53, EndPort: 53, Start: netip.MustParseAddr("10.1.0.1"), End: netip.MustParseAddr("10.1.0.20")},
	}
	if !equalTS(ch.LocalTS, wantTS) {
		t.Errorf("LocalTS %+v, want %+v", ch.LocalTS, wantTS)
	}
	if len(ch.RemoteTS) != 1 || !config.IsDynamic(ch.RemoteTS[0]) || ch.RemoteTS[0].IPProto != 1 || ch.RemoteTS[0].StartPort != 2048 {
		t.Errorf("RemoteTS %+v", ch.RemoteTS)
	}
}

func equalPrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalU16(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalTS(a, b []m.TrafficSelector) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].TSType != b[i].TSType || a[i].IPProto != b[i].IPProto || a[i].StartPort != b[i].StartPort ||
			a[i].EndPort != b[i].EndPort || a[i].Start != b[i].Start || a[i].End != b[i].End {
			return false
		}
	}
	return true
}

// TestSecrets: ike secrets with ids, hex and base64 values.
func TestSecrets(t *testing.T) {
	cfg := mustParse(t, `secrets {
  ike-a { id-1 = moon.strongswan.org
          id-2 = carol@strongswan.org
          secret = 0x01020304 }
  ike-b { secret = 0sAAEC }
  ike { secret = "plain text" }
}`)
	if len(cfg.Secrets) != 3 {
		t.Fatalf("%d secrets", len(cfg.Secrets))
	}
	a := cfg.Secrets[0]
	if !bytes.Equal(a.Data, []byte{1, 2, 3, 4}) || len(a.IDs) != 2 || a.IDs[0].Type != m.ID_FQDN || a.IDs[1].Type != m.ID_RFC822_ADDR {
		t.Errorf("secret a %+v", a)
	}
	if !bytes.Equal(cfg.Secrets[1].Data, []byte{0, 1, 2}) || string(cfg.Secrets[2].Data) != "plain text" || cfg.Secrets[2].IDs != nil {
		t.Errorf("secrets %+v %+v", cfg.Secrets[1], cfg.Secrets[2])
	}
}

// TestCertsAndKeys: certs relative to x509/, keys found in the key
// directories by their public key, the id defaulting to the subject;
// cacerts and authorities end up in Authorities once.
func TestCertsAndKeys(t *testing.T) {
	dir := t.TempDir()
	writeCreds(t, dir)
	conf := `connections {
  c {
    local { auth = pubkey
            certs = moonCert.pem }
    remote { cacerts = strongswanCert.pem }
  }
  r { local { certs = ` + filepath.Join(dir, "x509", "carolCert.pem") + ` } }
}
authorities { a { cacert = strongswanCert.pem } }
`
	path := filepath.Join(dir, "swanctl.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Connections[0].Local[0]
	if l.Key == nil || !samePublic(l.Key, l.Certs[0]) {
		t.Errorf("moon's key not attached")
	}
	if l.ID.Type != m.ID_DER_ASN1_DN || !bytes.Equal(l.ID.Data, l.Certs[0].RawSubject) {
		t.Errorf("id %+v, want the certificate's subject", l.ID)
	}
	if r := cfg.Connections[1].Local[0]; r.Key == nil {
		t.Errorf("carol's RSA key (rsa/) not attached")
	}
	if len(cfg.Authorities) != 1 || len(cfg.Connections[0].Remote[0].CACerts) != 1 {
		t.Errorf("%d authorities, %d cacerts", len(cfg.Authorities), len(cfg.Connections[0].Remote[0].CACerts))
	}
	// Without its key the certificate is useless: an error, naming it.
	os.Remove(filepath.Join(dir, "ecdsa", "moonKey.pem"))
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), `no private key for certificate "C=CH, O=strongSwan Project, CN=moon.strongswan.org"`) ||
		!strings.HasPrefix(err.Error(), path+":3: ") {
		t.Errorf("without the key: %v", err)
	}
	// An encrypted key is reported, not skipped.
	os.WriteFile(filepath.Join(dir, "ecdsa", "moonKey.pem"), []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"), 0o600)
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "encrypted private keys are not supported") {
		t.Errorf("encrypted key: %v", err)
	}
}
