package swanctl

import (
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	m "github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// Load reads the swanctl.conf at path (with its includes), the
// credentials it names and swanctl's key and CA directories next to it
// (private/, rsa/, ecdsa/, pkcs8/, x509ca/; x509/ for relative certs), as
// `swanctl --load-all --file path` does, and returns the configuration.
// The first problem ends the load with an *Error saying file:line.
func Load(path string) (*config.Config, error) {
	return load(path, nil, osFS{}, true)
}

// Parse is Load for a file already in memory: name is used in errors and
// for relative includes and credential paths; the credential directories
// are not read (certificates and keys named in the file still are).
func Parse(name string, data []byte) (*config.Config, error) {
	return load(name, data, osFS{}, false)
}

func load(path string, data []byte, fsys fileSystem, dirs bool) (*config.Config, error) {
	root := &section{}
	p := &parser{fs: fsys}
	var err error
	if data == nil {
		err = p.parseFile(path, root)
	} else {
		err = p.parseBytes(path, data, root)
	}
	if err != nil {
		return nil, err
	}
	if err := resolve(root); err != nil {
		return nil, err
	}
	b := &builder{dir: filepath.Dir(path), cfg: &config.Config{}, dirs: dirs}
	if dirs {
		if b.keys, err = loadKeyDirs(b.dir); err != nil {
			return nil, &Error{Pos: config.Pos{File: path}, Msg: err.Error()}
		}
		cas, err := loadCADir(b.dir)
		if err != nil {
			return nil, &Error{Pos: config.Pos{File: path}, Msg: err.Error()}
		}
		for _, c := range cas {
			b.cfg.Authorities = addCA(b.cfg.Authorities, c)
		}
	}
	if err := b.build(root); err != nil {
		return nil, err
	}
	return b.cfg, nil
}

type builder struct {
	dir  string
	cfg  *config.Config
	keys []loadedKey
	// dirs says the key directories were read, so a certificate without
	// its key is an error.
	dirs bool
}

// unsupportedKeys are strongSwan 5.9.8 options that ipsecstack does not
// implement, with the one value each may have because it asks for what
// ipsecstack does anyway ("" means no value is acceptable). Written with
// any other value they are errors, never ignored.
var (
	connUnsupported = map[string]string{
		"aggressive": "no", "pull": "yes", "mobike": "no", "dpd_timeout": "0", "childless": "never",
		"ppk_required": "no", "dscp": "000000", "if_id_in": "0", "if_id_out": "0",
		"ppk_id": "", "vips": "", "pools": "", "mediation": "no", "mediated_by": "", "mediation_peer": "",
	}
	childUnsupported = map[string]string{
		"updown": "", "hostaccess": "no", "policies": "yes", "policies_fwd_out": "no", "ipcomp": "no",
		"inactivity": "0", "mark_in": "0/0x00000000", "mark_in_sa": "no", "mark_out": "0/0x00000000",
		"set_mark_in": "0/0x00000000", "set_mark_out": "0/0x00000000", "tfc_padding": "0", "priority": "0",
		"interface": "", "hw_offload": "no", "sha256_96": "no", "copy_df": "yes", "copy_ecn": "yes",
		"copy_dscp": "out", "if_id_in": "0", "if_id_out": "0", "label": "", "label_mode": "system",
		"ah_proposals": "",
	}
	authUnsupported = map[string]string{
		"ca_id": "", "aaa_id": "", "eap_id": "", "xauth_id": "", "groups": "", "cert_policy": "",
		"pubkeys": "", "revocation": "relaxed",
	}
)

// checkUnsupported returns an error if k is an unsupported option set to
// something else than its harmless value, and whether k was one.
func checkUnsupported(table map[string]string, k *setting, kind string) (bool, error) {
	ok, known := table[k.key]
	if !known {
		return false, nil
	}
	v := strings.TrimSpace(k.value)
	if ok != "" && sameValue(ok, v) {
		return true, nil
	}
	return true, errAt(k.pos, "%s option %s = %s is not supported by ipsecstack", kind, k.key, v)
}

// sameValue compares an option's value with its harmless one: booleans
// by meaning, numbers by value.
func sameValue(want, got string) bool {
	if strings.EqualFold(want, got) {
		return true
	}
	if w, err := parseBool(want); err == nil {
		if g, err := parseBool(got); err == nil {
			return w == g
		}
	}
	if w, err := strconv.ParseUint(want, 0, 64); err == nil {
		if g, err := cUint(got); err == nil {
			return w == g
		}
	}
	if want == "0/0x00000000" {
		return got == "0" || got == "0/0" || got == "0/0x00000000"
	}
	return false
}

func (b *builder) build(root *section) error {
	for _, k := range root.settingsKeys() {
		return errAt(k.pos, "unknown top-level option %q", k.key)
	}
	referenced := map[string]bool{}
	var walk func(s *section)
	walk = func(s *section) {
		for _, r := range s.refs {
			referenced[strings.SplitN(r.path, ".", 2)[0]] = true
		}
		for _, c := range s.sections {
			walk(c)
		}
	}
	walk(root)
	for _, s := range root.sections {
		var err error
		switch s.name {
		case "connections":
			for _, k := range s.settingsKeys() {
				return errAt(k.pos, "connections: unexpected option %q (connections are sections)", k.key)
			}
			for _, c := range s.sections {
				conn, err := b.conn(c)
				if err != nil {
					return err
				}
				b.cfg.Connections = append(b.cfg.Connections, conn)
			}
		case "secrets":
			err = b.secrets(s)
		case "authorities":
			err = b.authorities(s)
		case "pools":
			if len(s.sections) > 0 || len(s.settingsKeys()) > 0 {
				err = errAt(s.pos, "pools (virtual IP address pools) are not supported by ipsecstack")
			}
		default:
			// A section that others reference is a template: its
			// settings are checked where they are inherited.
			if !referenced[s.name] {
				err = errAt(s.pos, "unknown top-level section %q", s.name)
			}
		}
		if err != nil {
			return err
		}
	}
	return b.attachKeys()
}

// listItems splits a list value as swanctl's add_list_key does: by ",",
// blanks trimmed, empty items dropped.
func listItems(v string) []string {
	var out []string
	for _, it := range strings.Split(v, ",") {
		if it = strings.Trim(it, " "); it != "" {
			out = append(out, it)
		}
	}
	return out
}

func (b *builder) conn(s *section) (*config.Connection, error) {
	c := &config.Connection{
		Name: s.name, Pos: s.pos,
		LocalPort: 500, RemotePort: 500,
		KeyingTries: 1, SendCertReq: true,
		Fragmentation: config.FragmentationYes,
	}
	const undef = -1
	rekey, reauth, over, rand := int64(undef), int64(undef), int64(undef), int64(undef)
	for _, k := range s.settingsKeys() {
		if !printable(k.value) {
			return nil, errAt(k.pos, "%s: value is not printable ASCII (strongSwan's vici rejects it too)", k.key)
		}
		if known, err := checkUnsupported(connUnsupported, k, "connection"); known {
			if err != nil {
				return nil, err
			}
			continue
		}
		var err error
		v := k.value
		switch k.key {
		case "version":
			var n uint64
			if n, err = cUint(v); err == nil && n != 2 {
				err = fmt.Errorf("IKE version %d is not supported (ipsecstack speaks IKEv2 only: version = 2)", n)
			}
		case "local_addrs":
			c.LocalAddrs, err = parseAddrs(v)
		case "remote_addrs":
			c.RemoteAddrs, err = parseAddrs(v)
		case "local_port":
			c.LocalPort, err = parsePort(v)
		case "remote_port":
			c.RemotePort, err = parsePort(v)
		case "proposals":
			c.Proposals, err = parseProposals(m.ProtoIKE, v)
		case "encap":
			c.Encap, err = parseBool(v)
		case "fragmentation":
			c.Fragmentation, err = parseEnum(v, map[string]config.Fragmentation{
				"yes": config.FragmentationYes, "accept": config.FragmentationAccept,
				"no": config.FragmentationNo, "force": config.FragmentationForce})
		case "dpd_delay":
			var t int64
			t, err = parseTime(v)
			c.DPDDelay = time.Duration(t) * time.Second
		case "rekey_time":
			rekey, err = parseTime(v)
		case "reauth_time":
			if reauth, err = parseTime(v); err == nil && reauth != 0 {
				err = fmt.Errorf("reauthentication is not supported by ipsecstack (reauth_time = 0; IKE SAs are rekeyed with rekey_time)")
			}
		case "over_time":
			over, err = parseTime(v)
		case "rand_time":
			rand, err = parseTime(v)
		case "keyingtries":
			var n uint64
			n, err = cUint(v)
			if err == nil && n > 1<<31-1 {
				err = fmt.Errorf("too large")
			}
			c.KeyingTries = int(n)
		case "unique":
			c.Unique, err = parseEnum(v, map[string]config.Unique{
				"never": config.UniqueNever, "no": config.UniqueNo,
				"replace": config.UniqueReplace, "keep": config.UniqueKeep})
		case "send_certreq":
			c.SendCertReq, err = parseBool(v)
		case "send_cert":
			c.SendCert, err = parseEnum(v, map[string]config.SendCert{
				"ifasked": config.SendCertIfAsked, "always": config.SendCertAlways, "never": config.SendCertNever})
		default:
			return nil, errAt(k.pos, "unknown connection option %q", k.key)
		}
		if err != nil {
			return nil, errAt(k.pos, "%s: %v", k.key, err)
		}
	}
	// The IKE lifetimes as vici's config_sn computes them: 4h rekeying
	// when neither rekey_time nor reauth_time is set, over_time 10% of it,
	// rand_time min(over_time, rekey_time/2); all in whole seconds.
	if rekey == undef && reauth == undef {
		rekey = 4 * 3600
	}
	if rekey == undef {
		rekey = 0
	}
	if over == undef {
		over = rekey / 10
	}
	if rand == undef {
		rand = min(over, rekey/2)
	}
	if c.LocalPort == 0 {
		c.LocalPort = 500 // config_sn: 0 is charon's socket port
	}
	c.RekeyTime = time.Duration(rekey) * time.Second
	c.OverTime = time.Duration(over) * time.Second
	c.RandTime = time.Duration(rand) * time.Second
	if len(c.Proposals) == 0 {
		c.Proposals = DefaultIKEProposals()
	}
	numberProposals(c.Proposals)

	type round struct {
		n   uint64
		pos int
		a   *config.Auth
		sec *section
	}
	var locals, remotes []round
	for i, sub := range s.sections {
		name := strings.ToLower(sub.name)
		switch {
		case name == "children":
			for _, k := range sub.settingsKeys() {
				return nil, errAt(k.pos, "children: unexpected option %q (children are sections)", k.key)
			}
			for _, cs := range sub.sections {
				ch, err := b.child(cs)
				if err != nil {
					return nil, err
				}
				for _, o := range c.Children {
					if o.Name == ch.Name {
						// "children" and "Children" are two sections to
						// the settings parser but one to vici.
						return nil, errAt(cs.pos, "child %s is defined twice (also at %s)", ch.Name, o.Pos)
					}
				}
				c.Children = append(c.Children, ch)
			}
		case strings.HasPrefix(name, "local"), strings.HasPrefix(name, "remote"):
			local := strings.HasPrefix(name, "local")
			a, n, err := b.auth(sub, local)
			if err != nil {
				return nil, err
			}
			r := round{n: n, pos: i, a: a, sec: sub}
			if local {
				locals = append(locals, r)
			} else {
				remotes = append(remotes, r)
			}
		default:
			return nil, errAt(sub.pos, "unknown connection section %q", sub.name)
		}
	}
	for _, rs := range [][]round{locals, remotes} {
		if len(rs) > 1 {
			sort.SliceStable(rs, func(i, j int) bool { return rs[i].n < rs[j].n })
			return nil, errAt(rs[1].sec.pos, "multiple authentication rounds (RFC 4739, %s and %s) are not supported by ipsecstack", rs[0].sec.name, rs[1].sec.name)
		}
	}
	for _, side := range []struct {
		rs  []round
		dst *[]*config.Auth
		loc bool
	}{{locals, &c.Local, true}, {remotes, &c.Remote, false}} {
		if len(side.rs) == 0 {
			// No local/remote section: swanctl.conf(5) documents auth =
			// pubkey as the default.
			*side.dst = []*config.Auth{{Pos: s.pos, Method: config.AuthPubkey}}
			continue
		}
		*side.dst = []*config.Auth{side.rs[0].a}
	}
	return c, nil
}

func numberProposals(ps []m.Proposal) {
	for i := range ps {
		ps[i].Num = uint8(i + 1)
	}
}

// parseProposals parses a proposals/esp_proposals list; "default" adds
// strongSwan's default proposals in the order parse_proposal adds them
// (classic, then AEAD).
func parseProposals(proto m.ProtocolID, v string) ([]m.Proposal, error) {
	var out []m.Proposal
	for _, it := range listItems(v) {
		if strings.EqualFold(it, "default") {
			if proto == m.ProtoIKE {
				out = append(out, defaultIKE()...)
			} else {
				out = append(out, defaultESPKeyword()...)
			}
			continue
		}
		p, err := parseProposal(proto, it)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", it, err)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no proposal")
	}
	if len(out) > 255 {
		return nil, fmt.Errorf("%d proposals, at most 255", len(out))
	}
	return out, nil
}

// parseAddrs is local_addrs/remote_addrs: addresses, CIDR subnets,
// %any/%any4/%any6. Ranges and hostnames are rejected: ipsecstack does not
// resolve names (write the address).
func parseAddrs(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, it := range listItems(v) {
		switch it {
		case "%any":
			return nil, nil
		case "%any4":
			out = append(out, netip.PrefixFrom(netip.IPv4Unspecified(), 0))
			continue
		case "%any6":
			out = append(out, netip.PrefixFrom(netip.IPv6Unspecified(), 0))
			continue
		}
		if strings.Contains(it, "-") {
			if _, _, err := parseRange(it); err == nil {
				return nil, fmt.Errorf("address range %q is not supported (use a subnet)", it)
			}
		}
		p, err := parseSubnet(it)
		if err != nil {
			return nil, fmt.Errorf("%q is not an address or subnet (hostnames are not resolved by ipsecstack)", it)
		}
		out = append(out, p)
	}
	return out, nil
}

func parsePort(v string) (uint16, error) {
	n, err := cUint(v)
	if err != nil || n > 65535 {
		return 0, fmt.Errorf("bad port %q", v)
	}
	return uint16(n), nil
}

// cUint is strtoul(s, &end, 0) requiring the whole string: decimal, 0x
// hex or 0 octal, as vici's parse_uint32 reads numbers.
func cUint(s string) (uint64, error) {
	s = strings.TrimLeft(s, " \t")
	if s == "" {
		return 0, fmt.Errorf("empty number")
	}
	base := 10
	switch {
	case len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X"):
		base, s = 16, s[2:]
	case len(s) > 1 && s[0] == '0':
		base, s = 8, s[1:]
	}
	n, err := strconv.ParseUint(s, base, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	return n, nil
}

// parseBool is vici's parse_bool.
func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "yes", "true", "enabled", "1":
		return true, nil
	case "no", "false", "disabled", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not yes or no", v)
}

func parseEnum[T any](v string, mp map[string]T) (T, error) {
	for k, t := range mp {
		if strings.EqualFold(k, v) {
			return t, nil
		}
	}
	var zero T
	names := make([]string, 0, len(mp))
	for k := range mp {
		names = append(names, k)
	}
	sort.Strings(names)
	return zero, fmt.Errorf("%q is not one of %s", v, strings.Join(names, ", "))
}

// parseTime is vici's parse_time: a number and an optional s, m, h or d.
func parseTime(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 's', 'S':
			s = s[:n-1]
		case 'm', 'M':
			mult, s = 60, s[:n-1]
		case 'h', 'H':
			mult, s = 3600, s[:n-1]
		case 'd', 'D':
			mult, s = 86400, s[:n-1]
		}
	}
	n, err := cUint(strings.TrimRight(s, " "))
	if err != nil || n > 1<<40 {
		return 0, fmt.Errorf("%q is not a time (a number with s, m, h or d)", v)
	}
	return int64(n) * mult, nil
}

// parseBytes is vici's parse_bytes: a number and an optional k, m or g
// (powers of 1024).
func parseBytes(v string) (uint64, error) {
	s := strings.TrimSpace(v)
	mult := uint64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult, s = 1<<10, s[:n-1]
		case 'm', 'M':
			mult, s = 1<<20, s[:n-1]
		case 'g', 'G':
			mult, s = 1<<30, s[:n-1]
		}
	}
	n, err := cUint(strings.TrimRight(s, " "))
	if err != nil || n > (1<<64-1)/mult {
		return 0, fmt.Errorf("%q is not a byte count (a number with k, m or g)", v)
	}
	return n * mult, nil
}

// auth parses a local* or remote* section; it returns the round number.
func (b *builder) auth(s *section, local bool) (*config.Auth, uint64, error) {
	a := &config.Auth{Pos: s.pos, Method: config.AuthPubkey}
	var round uint64
	var idSet bool
	for _, k := range s.settingsKeys() {
		if !printable(k.value) {
			return nil, 0, errAt(k.pos, "%s: value is not printable ASCII (strongSwan's vici rejects it too)", k.key)
		}
		if known, err := checkUnsupported(authUnsupported, k, "authentication"); known {
			if err != nil {
				return nil, 0, err
			}
			continue
		}
		var err error
		switch k.key {
		case "auth":
			err = parseAuth(a, k.value)
		case "id":
			a.ID, err = parseID(k.value)
			idSet = true
		case "round":
			round, err = cUint(k.value)
		case "certs":
			for _, it := range listItems(k.value) {
				var c *x509.Certificate
				if c, err = b.cert(dirX509, it); err != nil {
					break
				}
				a.Certs = append(a.Certs, c)
			}
		case "cacerts":
			for _, it := range listItems(k.value) {
				var c *x509.Certificate
				if c, err = b.cert(dirX509CA, it); err != nil {
					break
				}
				a.CACerts = append(a.CACerts, c)
				b.cfg.Authorities = addCA(b.cfg.Authorities, c)
			}
		default:
			err = fmt.Errorf("unknown authentication option")
		}
		if err != nil {
			return nil, 0, errAt(k.pos, "%s: %v", k.key, err)
		}
	}
	// cert<suffix> and cacert<suffix> subsections with a file.
	for _, sub := range s.sections {
		lower := strings.ToLower(sub.name)
		isCA := strings.HasPrefix(lower, "cacert")
		if !isCA && !strings.HasPrefix(lower, "cert") {
			return nil, 0, errAt(sub.pos, "unknown authentication section %q", sub.name)
		}
		var file *setting
		for _, k := range sub.settingsKeys() {
			switch k.key {
			case "file":
				file = k
			case "handle", "slot", "module":
				return nil, 0, errAt(k.pos, "%s: PKCS#11 tokens are not supported by ipsecstack", k.key)
			default:
				return nil, 0, errAt(k.pos, "unknown certificate option %q", k.key)
			}
		}
		if file == nil {
			return nil, 0, errAt(sub.pos, "%s: file missing", sub.name)
		}
		// vici loads these with BUILD_FROM_FILE: the path as written.
		c, err := b.cert("", file.value)
		if err != nil {
			return nil, 0, errAt(file.pos, "file: %v", err)
		}
		if isCA {
			a.CACerts = append(a.CACerts, c)
			b.cfg.Authorities = addCA(b.cfg.Authorities, c)
		} else {
			a.Certs = append(a.Certs, c)
		}
	}
	if !idSet && len(a.Certs) > 0 {
		// vici: "id not specified, defaulting to cert subject".
		a.ID = config.Identity{Type: m.ID_DER_ASN1_DN, Data: a.Certs[0].RawSubject}
	}
	return a, round, nil
}

func (b *builder) cert(sub, token string) (*x509.Certificate, error) {
	data, name, err := readBlob(b.dir, sub, token)
	if err != nil {
		return nil, err
	}
	return parseCert(data, name)
}

// RFC 7427 hash algorithm IDs (IANA "IKEv2 Hash Algorithms").
const (
	hashSHA1     = 1
	hashSHA256   = 2
	hashSHA384   = 3
	hashSHA512   = 4
	hashIdentity = 5
)

// parseAuth is vici's parse_auth plus auth_cfg's add_pubkey_constraints
// for the public key methods: pubkey, rsa, rsa/pss, ecdsa, ed25519, each
// with optional -sha1/-sha256/-sha384/-sha512/-identity scheme tokens
// (e.g. rsa/pss-sha256, ecdsa-sha384-sha256, pubkey-sha512). Key strength
// tokens (rsa-2048), ike: constraints, EAP, XAuth and the rest are
// rejected.
func parseAuth(a *config.Auth, v string) error {
	if strings.EqualFold(v, "psk") {
		a.Method, a.KeyType, a.Schemes = config.AuthPSK, config.KeyAny, nil
		return nil
	}
	lower := strings.ToLower(v)
	for _, p := range []string{"eap", "xauth"} {
		if strings.HasPrefix(lower, p) {
			return fmt.Errorf("%q: %s authentication is not supported by ipsecstack", v, strings.ToUpper(p))
		}
	}
	if strings.HasPrefix(v, "ike:") {
		return fmt.Errorf("%q: separate IKE signature constraints (ike:) are not supported by ipsecstack", v)
	}
	if strings.HasPrefix(v, "ed25519") {
		return fmt.Errorf("%q: strongSwan 5.9.8 does not accept this auth value; write pubkey (or pubkey-identity)", v)
	}
	if !strings.HasPrefix(v, "pubkey") && !strings.HasPrefix(v, "rsa") && !strings.HasPrefix(v, "ecdsa") {
		if strings.HasPrefix(v, "bliss") {
			return fmt.Errorf("%q: BLISS is not supported by ipsecstack", v)
		}
		return fmt.Errorf("%q is not psk, pubkey, rsa or ecdsa", v)
	}
	a.Method, a.KeyType, a.Schemes = config.AuthPubkey, config.KeyAny, nil
	keySeen := false
	for _, tok := range strings.Split(v, "-") {
		if tok == "" {
			continue
		}
		switch tok {
		case "pubkey", "rsa", "rsa/pss", "ecdsa", "ed25519":
			a.KeyType = map[string]config.KeyType{"pubkey": config.KeyAny, "rsa": config.KeyRSA,
				"rsa/pss": config.KeyRSAPSS, "ecdsa": config.KeyECDSA, "ed25519": config.KeyEd25519}[tok]
			keySeen = true
			continue
		case "ed448", "bliss":
			return fmt.Errorf("%q: %s keys are not supported by ipsecstack", v, tok)
		}
		if !keySeen {
			return fmt.Errorf("%q: scheme %q before a key type", v, tok)
		}
		if _, err := strconv.Atoi(tok); err == nil {
			return fmt.Errorf("%q: key strength constraints (%s) are not supported by ipsecstack", v, tok)
		}
		h, ok := map[string]uint16{"sha1": hashSHA1, "sha256": hashSHA256, "sha384": hashSHA384,
			"sha512": hashSHA512, "identity": hashIdentity}[tok]
		if !ok {
			// strongSwan logs "ignoring invalid auth token" and goes on;
			// an ignored constraint would weaken what the user wrote.
			return fmt.Errorf("%q: unknown or unsupported signature scheme %q", v, tok)
		}
		if (a.KeyType == config.KeyRSA || a.KeyType == config.KeyRSAPSS || a.KeyType == config.KeyECDSA) && h == hashIdentity ||
			a.KeyType == config.KeyEd25519 && h != hashIdentity ||
			a.KeyType == config.KeyRSAPSS && h == hashSHA1 {
			return fmt.Errorf("%q: scheme %s does not go with that key type", v, tok)
		}
		a.Schemes = append(a.Schemes, h)
	}
	return nil
}

func (b *builder) child(s *section) (*config.Child, error) {
	c := &config.Child{Name: s.name, Pos: s.pos, Mode: xfrm.ModeTunnel, ReplayWindow: 32}
	const undef = -1
	rekey, life, rand := int64(3600), int64(undef), int64(undef)
	var rekeyB, lifeB, randB, rekeyP, lifeP, randP uint64
	lifeBSet, randBSet, lifePSet, randPSet := false, false, false, false
	for _, k := range s.settingsKeys() {
		if !printable(k.value) {
			return nil, errAt(k.pos, "%s: value is not printable ASCII (strongSwan's vici rejects it too)", k.key)
		}
		if known, err := checkUnsupported(childUnsupported, k, "CHILD_SA"); known {
			if err != nil {
				return nil, err
			}
			continue
		}
		var err error
		v := k.value
		switch k.key {
		case "local_ts", "remote_ts":
			var tss []m.TrafficSelector
			for _, it := range listItems(v) {
				ts, e := parseTS(it)
				if e != nil {
					err = fmt.Errorf("%q: %v", it, e)
					break
				}
				tss = append(tss, ts)
			}
			if k.key == "local_ts" {
				c.LocalTS = tss
			} else {
				c.RemoteTS = tss
			}
		case "mode":
			switch strings.ToLower(v) {
			case "tunnel":
				c.Mode = xfrm.ModeTunnel
			case "transport":
				c.Mode = xfrm.ModeTransport
			case "transport_proxy", "beet", "pass", "drop":
				err = fmt.Errorf("mode %s is not supported by ipsecstack (tunnel or transport)", v)
			default:
				err = fmt.Errorf("%q is not a mode", v)
			}
		case "esp_proposals":
			c.Proposals, err = parseProposals(m.ProtoESP, v)
		case "start_action":
			c.StartAction, err = parseEnum(v, map[string]config.StartAction{
				"none": config.StartNone, "clear": config.StartNone, "trap": config.StartTrap,
				"route": config.StartTrap, "start": config.StartStart, "restart": config.StartStart})
		case "dpd_action":
			c.DPDAction, err = parseAction(v)
		case "close_action":
			c.CloseAction, err = parseAction(v)
		case "rekey_time":
			rekey, err = parseTime(v)
		case "life_time":
			life, err = parseTime(v)
		case "rand_time":
			rand, err = parseTime(v)
		case "rekey_bytes":
			rekeyB, err = parseBytes(v)
		case "life_bytes":
			lifeB, err = parseBytes(v)
			lifeBSet = true
		case "rand_bytes":
			randB, err = parseBytes(v)
			randBSet = true
		case "rekey_packets":
			rekeyP, err = cUint(v)
		case "life_packets":
			lifeP, err = cUint(v)
			lifePSet = true
		case "rand_packets":
			randP, err = cUint(v)
			randPSet = true
		case "replay_window":
			var n uint64
			if n, err = cUint(v); err == nil && n > 1<<32-1 {
				err = fmt.Errorf("too large")
			}
			c.ReplayWindow = uint32(n)
		case "reqid":
			var n uint64
			if n, err = cUint(v); err == nil && n > 1<<32-1 {
				err = fmt.Errorf("too large")
			}
			c.ReqID = uint32(n)
		default:
			return nil, errAt(k.pos, "unknown CHILD_SA option %q", k.key)
		}
		if err != nil {
			return nil, errAt(k.pos, "%s: %v", k.key, err)
		}
	}
	for _, sub := range s.sections {
		return nil, errAt(sub.pos, "unknown CHILD_SA section %q", sub.name)
	}
	if len(c.LocalTS) == 0 {
		c.LocalTS = []m.TrafficSelector{config.DynamicTS(0, 0, 0xffff)}
	}
	if len(c.RemoteTS) == 0 {
		c.RemoteTS = []m.TrafficSelector{config.DynamicTS(0, 0, 0xffff)}
	}
	if len(c.Proposals) == 0 {
		c.Proposals = DefaultESPProposals()
	}
	numberProposals(c.Proposals)
	// check_lifetimes: hard = soft + 10%, jitter = hard - soft.
	if life == undef {
		life = rekey * 110 / 100
	}
	if rand == undef {
		rand = life - min(life, rekey)
	}
	if !lifeBSet {
		lifeB = rekeyB * 110 / 100
	}
	if !randBSet {
		randB = lifeB - min(lifeB, rekeyB)
	}
	if !lifePSet {
		lifeP = rekeyP * 110 / 100
	}
	if !randPSet {
		randP = lifeP - min(lifeP, rekeyP)
	}
	c.RekeyTime = time.Duration(rekey) * time.Second
	c.LifeTime = time.Duration(life) * time.Second
	c.RandTime = time.Duration(rand) * time.Second
	c.RekeyBytes, c.LifeBytes, c.RandBytes = rekeyB, lifeB, randB
	c.RekeyPackets, c.LifePackets, c.RandPackets = rekeyP, lifeP, randP
	return c, nil
}

// parseAction is vici's parse_action for dpd_action and close_action.
func parseAction(v string) (config.Action, error) {
	return parseEnum(v, map[string]config.Action{
		"none": config.ActionClear, "clear": config.ActionClear, "trap": config.ActionTrap,
		"route": config.ActionTrap, "start": config.ActionRestart, "restart": config.ActionRestart})
}

// secrets parses the secrets section: ike<suffix> shared keys, and
// private/rsa/ecdsa/pkcs8<suffix> passphrase sections for key files.
func (b *builder) secrets(s *section) error {
	for _, k := range s.settingsKeys() {
		return errAt(k.pos, "secrets: unexpected option %q (secrets are sections)", k.key)
	}
	for _, sec := range s.sections {
		switch {
		case strings.HasPrefix(sec.name, "ike"):
			x := &config.Secret{Pos: sec.pos, Type: "ike"}
			var have bool
			for _, k := range sec.settingsKeys() {
				switch {
				case k.key == "secret":
					d, err := parseSecret(k.value)
					if err != nil {
						return errAt(k.pos, "secret: %v", err)
					}
					x.Data, have = d, true
				case strings.HasPrefix(k.key, "id"):
					id, err := parseID(k.value)
					if err != nil {
						return errAt(k.pos, "%s: %v", k.key, err)
					}
					x.IDs = append(x.IDs, id)
				default:
					return errAt(k.pos, "unknown option %q in secret %s", k.key, sec.name)
				}
			}
			if !have {
				return errAt(sec.pos, "secret %s: secret missing", sec.name)
			}
			if len(x.Data) == 0 {
				return errAt(sec.pos, "secret %s: empty secret", sec.name)
			}
			for _, sub := range sec.sections {
				return errAt(sub.pos, "unknown section %q in secret %s", sub.name, sec.name)
			}
			b.cfg.Secrets = append(b.cfg.Secrets, x)
		case hasAnyPrefix(sec.name, "private", "rsa", "ecdsa", "pkcs8"):
			if err := b.keySecret(sec); err != nil {
				return err
			}
		case hasAnyPrefix(sec.name, "eap", "xauth", "ntlm", "ppk", "pkcs12", "token", "bliss"):
			return errAt(sec.pos, "secret type of %q is not supported by ipsecstack", sec.name)
		default:
			return errAt(sec.pos, "unknown secret type %q (ike, private, rsa, ecdsa or pkcs8)", sec.name)
		}
	}
	return nil
}

func hasAnyPrefix(s string, ps ...string) bool {
	for _, p := range ps {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// keySecret is a private/rsa/ecdsa/pkcs8 secrets section: the passphrase
// (secret*) for the key file (file) in the matching directory. Keys are
// read from the directories; ipsecstack reads unencrypted keys only, so a
// section whose file is encrypted ends in that error, and one whose file
// is missing is an error too.
func (b *builder) keySecret(sec *section) error {
	var file *setting
	for _, k := range sec.settingsKeys() {
		switch {
		case k.key == "file":
			file = k
		case strings.HasPrefix(k.key, "secret"):
		default:
			return errAt(k.pos, "unknown option %q in secret %s", k.key, sec.name)
		}
	}
	for _, sub := range sec.sections {
		return errAt(sub.pos, "unknown section %q in secret %s", sub.name, sec.name)
	}
	if file == nil {
		return errAt(sec.pos, "secret %s: file missing", sec.name)
	}
	typ := sec.name
	for _, p := range []string{"private", "rsa", "ecdsa", "pkcs8"} {
		if strings.HasPrefix(typ, p) {
			typ = p
			break
		}
	}
	path := filepath.Join(b.dir, typ, file.value)
	data, err := readRegular(path, maxCredFile)
	if err != nil {
		return errAt(file.pos, "file: %s: %s", path, pathErr(err))
	}
	kt := ""
	if typ == "rsa" || typ == "ecdsa" {
		kt = typ
	}
	k, err := parseKey(data, kt)
	if err != nil {
		return errAt(file.pos, "file: %s: %v", path, err)
	}
	b.keys = appendKey(b.keys, loadedKey{key: k, file: path})
	return nil
}

func appendKey(ks []loadedKey, k loadedKey) []loadedKey {
	for _, o := range ks {
		if o.file == k.file {
			return ks
		}
	}
	return append(ks, k)
}

// parseSecret is load_secret's value handling: 0x<hex>, 0s<base64>, or
// the string itself.
func parseSecret(v string) ([]byte, error) {
	switch {
	case len(v) >= 2 && strings.EqualFold(v[:2], "0x"):
		return hexBytes(v[2:])
	case len(v) >= 2 && strings.EqualFold(v[:2], "0s"):
		d, err := base64.StdEncoding.DecodeString(v[2:])
		if err != nil {
			return nil, fmt.Errorf("bad base64")
		}
		return d, nil
	}
	return []byte(v), nil
}

// authorities parses authorities.<name> { cacert = file }.
func (b *builder) authorities(s *section) error {
	for _, k := range s.settingsKeys() {
		return errAt(k.pos, "authorities: unexpected option %q (authorities are sections)", k.key)
	}
	for _, a := range s.sections {
		var have bool
		for _, k := range a.settingsKeys() {
			switch k.key {
			case "cacert":
				c, err := b.cert(dirX509CA, k.value)
				if err != nil {
					return errAt(k.pos, "cacert: %v", err)
				}
				b.cfg.Authorities = addCA(b.cfg.Authorities, c)
				have = true
			case "file":
				c, err := b.cert("", k.value)
				if err != nil {
					return errAt(k.pos, "file: %v", err)
				}
				b.cfg.Authorities = addCA(b.cfg.Authorities, c)
				have = true
			case "handle", "slot", "module":
				return errAt(k.pos, "%s: PKCS#11 tokens are not supported by ipsecstack", k.key)
			case "crl_uris", "ocsp_uris", "cert_uri_base":
				return errAt(k.pos, "%s: revocation checking and hash-and-URL are not supported by ipsecstack", k.key)
			default:
				return errAt(k.pos, "unknown authority option %q", k.key)
			}
		}
		for _, sub := range a.sections {
			return errAt(sub.pos, "unknown section %q in authority %s", sub.name, a.name)
		}
		if !have {
			return errAt(a.pos, "authority %s: cacert missing", a.name)
		}
	}
	return nil
}

// attachKeys gives each local public key round the private key of its
// certificate, as charon finds it among the loaded keys.
func (b *builder) attachKeys() error {
	for _, c := range b.cfg.Connections {
		for _, a := range c.Local {
			if a.Method != config.AuthPubkey || len(a.Certs) == 0 {
				continue
			}
			for _, k := range b.keys {
				if samePublic(k.key, a.Certs[0]) {
					a.Key = k.key
					break
				}
			}
			if a.Key == nil && b.dirs {
				return errAt(a.Pos, "connection %s: no private key for certificate %q (looked in %s/{private,rsa,ecdsa,pkcs8})",
					c.Name, dnString(a.Certs[0].RawSubject), b.dir)
			}
		}
	}
	return nil
}

// printable is vici_stringify's chunk_printable: isprint characters only.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
