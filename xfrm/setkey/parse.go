package setkey

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"

	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/esp"
)

// Priority bases of ipsec-tools' libipsec (libpfkey.h). A policy without
// "prio" gets PriorityDefault, as setkey on Linux sends; lower wins.
const (
	PriorityLow     = 0xC0000000
	PriorityDefault = 0x80000000
	PriorityHigh    = 0x40000000

	priorityOffsetPositiveMax = 0x3fffffff
	priorityOffsetNegativeMax = 0x40000000
)

// Statement is one parsed setkey statement.
type Statement struct {
	Pos Pos
	// Cmd is the statement keyword: add, get, delete, deleteall, flush,
	// dump, spdadd, spdupdate, spddelete, spdflush, spddump.
	Cmd string

	// SA is the SA of add (keys validated by building it once).
	SA xfrm.SAConfig
	// PadOption is add's -f option (recorded; ESP pads as RFC 4303).
	PadOption string

	// Proto, Src, Dst and SPI name SAs for get, delete and deleteall
	// (SPI unused), and Proto filters flush and dump (0 = all).
	Proto    xfrm.Proto
	Src, Dst netip.Addr
	SPI      uint32

	// Policy is the policy of spdadd, spdupdate and spddelete (Dir and
	// Sel only for spddelete).
	Policy xfrm.Policy
}

type parser struct {
	file string
	toks []token
	i    int
}

// Parse parses a setkey file. file names it in errors.
func Parse(file, src string) ([]Statement, error) {
	toks, err := lex(file, src)
	if err != nil {
		return nil, err
	}
	p := &parser{file: file, toks: toks}
	var out []Statement
	for p.peek().kind != tokEOF {
		if p.peek().kind == tokSemi { // empty statement
			p.next()
			continue
		}
		st, err := p.statement()
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tokEOF {
		p.i++
	}
	return t
}

func (p *parser) errf(t token, format string, args ...any) error {
	return &Error{p.file, t.pos, fmt.Sprintf(format, args...)}
}

func (p *parser) word(what string) (token, error) {
	t := p.next()
	if t.kind != tokWord {
		return t, p.errf(t, "expected %s, found %v", what, t)
	}
	return t, nil
}

func (p *parser) semi() error {
	t := p.next()
	if t.kind != tokSemi {
		return p.errf(t, "expected \";\", found %v", t)
	}
	return nil
}

func (p *parser) statement() (Statement, error) {
	t, err := p.word("a command")
	if err != nil {
		return Statement{}, err
	}
	st := Statement{Pos: t.pos, Cmd: t.text}
	switch t.text {
	case "add":
		err = p.add(&st)
	case "get", "delete", "deleteall":
		err = p.saRef(&st)
	case "flush", "dump":
		if p.peek().kind == tokWord {
			pt := p.next()
			if st.Proto, err = p.saProto(pt); err != nil {
				return st, err
			}
		}
		err = p.semi()
	case "spdadd", "spdupdate", "spddelete":
		err = p.spd(&st)
	case "spdflush", "spddump":
		err = p.semi()
	default:
		return st, p.errf(t, "unknown command %v", t)
	}
	return st, err
}

// skipFamilyFlags skips -4, -6 and -n (address family and numeric output
// hints; numeric addresses are all we accept anyway).
func (p *parser) skipFamilyFlags() {
	for p.peek().kind == tokWord {
		switch p.peek().text {
		case "-4", "-6", "-n", "-46", "-64":
			p.next()
			continue
		}
		return
	}
}

func (p *parser) addr(what string) (netip.Addr, token, error) {
	t, err := p.word(what)
	if err != nil {
		return netip.Addr{}, t, err
	}
	a, err := netip.ParseAddr(t.text)
	if err != nil || a.Zone() != "" {
		return a, t, p.errf(t, "invalid %s %v", what, t)
	}
	return a.Unmap(), t, nil
}

func (p *parser) saProto(t token) (xfrm.Proto, error) {
	switch t.text {
	case "esp":
		return xfrm.ProtoESP, nil
	case "ah":
		return xfrm.ProtoAH, nil
	case "ipcomp":
		return xfrm.ProtoIPComp, nil
	case "esp-old", "ah-old":
		return 0, p.errf(t, "protocol %s (RFC 1827/1826) is not supported", t.text)
	case "tcp":
		return 0, p.errf(t, "protocol tcp (TCP-MD5 signatures) is not supported")
	}
	return 0, p.errf(t, "unknown protocol %v (want esp, ah or ipcomp)", t)
}

func parseUint(s string, bits int) (uint64, error) {
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
		return strconv.ParseUint(s[2:], 16, bits)
	}
	return strconv.ParseUint(s, 10, bits)
}

func (p *parser) number(what string, bits int) (uint64, token, error) {
	t, err := p.word(what)
	if err != nil {
		return 0, t, err
	}
	v, err := parseUint(t.text, bits)
	if err != nil {
		return 0, t, p.errf(t, "invalid %s %v", what, t)
	}
	return v, t, nil
}

// saAddr reads an SA endpoint: an address, optionally followed by
// ipsec-tools' "[port]" (the UDP port of esp-udp), either joined to it
// ("10.0.0.1[4500]", "2001:db8::1[4500]") or as the next word
// ("10.0.0.1 [4500]"), as ipsec-tools' lexer takes both. port is 0 when
// none was given; hasPort tells "[0]" and "[any]" (refused later) from no
// port at all.
func (p *parser) saAddr(what string) (a netip.Addr, port uint16, hasPort bool, t token, err error) {
	if t, err = p.word(what); err != nil {
		return a, 0, false, t, err
	}
	s, ps := t.text, ""
	if i := strings.IndexByte(s, '['); i >= 0 {
		if !strings.HasSuffix(s, "]") {
			return a, 0, false, t, p.errf(t, "invalid %s %v: unbalanced \"[\"", what, t)
		}
		s, ps, hasPort = s[:i], s[i+1:len(s)-1], true
	} else if n := p.peek(); n.kind == tokWord && strings.HasPrefix(n.text, "[") && strings.HasSuffix(n.text, "]") {
		p.next()
		ps, hasPort = n.text[1:len(n.text)-1], true
	}
	if a, err = netip.ParseAddr(s); err != nil || a.Zone() != "" {
		return a, 0, false, t, p.errf(t, "invalid %s %v", what, t)
	}
	if hasPort && ps != "any" {
		v, err := strconv.ParseUint(ps, 10, 16)
		if err != nil {
			return a, 0, false, t, p.errf(t, "invalid port %s in %s %v", quote(ps), what, t)
		}
		port = uint16(v)
	}
	return a.Unmap(), port, hasPort, t, nil
}

// endpoints parses "src[port] dst[port] proto" of an SA statement.
// ipsec-tools' protocol "esp-udp" is ESP in UDP (RFC 3948): its ports are
// the ones after the addresses, both required and non-zero for add; a
// port on any other protocol is an error (ipsec-tools would send it in a
// sockaddr that Linux ignores). It returns whether esp-udp was given and
// the ports.
func (p *parser) endpoints(st *Statement) (udp bool, sport, dport uint16, err error) {
	p.skipFamilyFlags()
	var ts, td token
	var sHas, dHas bool
	if st.Src, sport, sHas, ts, err = p.saAddr("source address"); err != nil {
		return
	}
	if st.Dst, dport, dHas, td, err = p.saAddr("destination address"); err != nil {
		return
	}
	if st.Src.Is4() != st.Dst.Is4() {
		return false, 0, 0, p.errf(td, "source %v and destination %v are of different address families", st.Src, st.Dst)
	}
	t, err := p.word("a protocol")
	if err != nil {
		return
	}
	if t.text == "esp-udp" {
		st.Proto, udp = xfrm.ProtoESP, true
	} else if st.Proto, err = p.saProto(t); err != nil {
		return
	}
	switch {
	case !udp && (sHas || dHas):
		at := ts
		if !sHas {
			at = td
		}
		return false, 0, 0, p.errf(at, "a port on an SA address is for esp-udp (ESP in UDP) only, not %s", t.text)
	case udp && st.Cmd == "add" && (!sHas || !dHas):
		return false, 0, 0, p.errf(t, "esp-udp needs the UDP port of both addresses, as in 10.0.0.1[4500] 192.0.2.1[4500]")
	case udp && st.Cmd == "add" && (sport == 0 || dport == 0):
		at := ts
		if sport != 0 {
			at = td
		}
		return false, 0, 0, p.errf(at, "esp-udp port must be 1-65535")
	}
	return udp, sport, dport, nil
}

func (p *parser) spi() (uint32, error) {
	v, t, err := p.number("SPI", 32)
	if err != nil {
		return 0, err
	}
	_ = t
	return uint32(v), nil
}

func (p *parser) saRef(st *Statement) error {
	if _, _, _, err := p.endpoints(st); err != nil {
		return err
	}
	if st.Cmd != "deleteall" {
		var err error
		if st.SPI, err = p.spi(); err != nil {
			return err
		}
	}
	return p.semi()
}

// key reads a key, 0x-hex or a quoted string. field names it in errors
// ("encryption key for aes-cbc"), which give its place and never its
// digits: error messages end up in logs and journals.
func (p *parser) key(field string) ([]byte, bool, error) {
	t := p.peek()
	switch {
	case t.kind == tokString:
		p.next()
		return []byte(t.text), true, nil
	case t.kind == tokWord && (strings.HasPrefix(t.text, "0x") || strings.HasPrefix(t.text, "0X")):
		p.next()
		h := t.text[2:]
		if len(h)%2 != 0 {
			return nil, true, p.errf(t, "%s has an odd number of hex digits (%d): a key is whole bytes", field, len(h))
		}
		k, err := hex.DecodeString(h)
		if err != nil {
			return nil, true, p.errf(t, "%s is not hexadecimal", field)
		}
		return k, true, nil
	}
	return nil, false, nil
}

// algName reads the algorithm name after -E, -A or -C (option t), which
// may be given once: given records that it was.
func (p *parser) algName(t token, given *bool, what string) (token, error) {
	if *given {
		return token{}, p.errf(t, "%s given twice", t.text)
	}
	*given = true
	return p.word(what)
}

// algKey reads the key after algorithm alg (what: "encryption" or
// "authentication"); without one it is an error when required.
func (p *parser) algKey(alg token, what string, required bool) ([]byte, error) {
	k, ok, err := p.key(what + " key for " + alg.text)
	if err != nil {
		return nil, err
	}
	if !ok && required {
		return nil, p.errf(p.peek(), "expected a key (0x... or \"string\") for %s, found %v", alg.text, p.peek())
	}
	return k, nil
}

func (p *parser) add(st *Statement) error {
	udp, sport, dport, err := p.endpoints(st)
	if err != nil {
		return err
	}
	c := &st.SA
	if udp {
		// ipsec-tools' "esp-udp [ADDRESS]": the optional address is
		// the peer's original address before NAT (NAT-OA). An SPI is
		// never an address, so the two cannot be confused.
		c.Encap = xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: sport, DPort: dport}
		if t := p.peek(); t.kind == tokWord {
			if oa, err := netip.ParseAddr(t.text); err == nil {
				p.next()
				if oa.Zone() != "" {
					return p.errf(t, "invalid NAT original address %v", t)
				}
				if oa = oa.Unmap(); oa.Is4() != st.Src.Is4() {
					return p.errf(t, "NAT original address %v is not of the SA's address family", oa)
				}
				if !oa.IsUnspecified() {
					c.Encap.OA = oa
				}
			}
		}
	}
	spi, err := p.spi()
	if err != nil {
		return err
	}
	c.Proto, c.Src, c.Dst, c.SPI = st.Proto, st.Src, st.Dst, spi
	var encTok token
	haveEnc, haveAuth, haveComp := false, false, false
	for {
		t := p.next()
		if t.kind == tokSemi {
			break
		}
		if t.kind != tokWord || !strings.HasPrefix(t.text, "-") {
			return p.errf(t, "expected an option or \";\", found %v", t)
		}
		switch t.text {
		case "-m":
			m, err := p.word("a mode")
			if err != nil {
				return err
			}
			switch m.text {
			case "transport", "any":
				c.Mode = xfrm.ModeTransport
			case "tunnel":
				c.Mode = xfrm.ModeTunnel
			default:
				return p.errf(m, "unknown mode %v (want transport, tunnel or any)", m)
			}
		case "-r":
			v, _, err := p.number("replay window size", 32)
			if err != nil {
				return err
			}
			c.ReplayWindow = uint32(v)
		case "-u":
			v, _, err := p.number("reqid", 32)
			if err != nil {
				return err
			}
			c.ReqID = uint32(v)
		case "-f":
			f, err := p.word("a pad option")
			if err != nil {
				return err
			}
			switch f.text {
			case "zero-pad", "random-pad", "seq-pad", "nocyclic-seq", "cyclic-seq":
				st.PadOption = f.text
			default:
				return p.errf(f, "unknown pad option %v", f)
			}
		case "-lh", "-ls", "-bh", "-bs":
			v, _, err := p.number("lifetime", 64)
			if err != nil {
				return err
			}
			switch t.text {
			case "-lh":
				c.Hard.AddSeconds = v
			case "-ls":
				c.Soft.AddSeconds = v
			case "-bh":
				c.Hard.Bytes = v
			case "-bs":
				c.Soft.Bytes = v
			}
		case "-E":
			encTok = t
			n, err := p.algName(t, &haveEnc, "an encryption algorithm")
			if err != nil {
				return err
			}
			kind := esp.KindAEAD
			if _, err := esp.Lookup(esp.KindAEAD, n.text, 0); err != nil {
				kind = esp.KindEncryption
				if _, err := esp.Lookup(esp.KindEncryption, n.text, 0); err != nil {
					if _, e2 := esp.Lookup(esp.KindIntegrity, n.text, 0); e2 == nil {
						return p.errf(n, "%s is an authentication algorithm; use -A", n.text)
					}
					return p.errf(n, "unknown or unimplemented encryption algorithm %v", n)
				}
			}
			k, err := p.algKey(n, "encryption", n.text != "null")
			if err != nil {
				return err
			}
			if kind == esp.KindAEAD {
				c.AEAD = xfrm.Algorithm{Name: n.text, Key: k}
			} else {
				c.Enc = xfrm.Algorithm{Name: n.text, Key: k}
			}
		case "-A":
			n, err := p.algName(t, &haveAuth, "an authentication algorithm")
			if err != nil {
				return err
			}
			if _, err := esp.Lookup(esp.KindIntegrity, n.text, 0); err != nil {
				if n.text == "null" {
					return p.errf(n, "authentication algorithm null is not implemented")
				}
				return p.errf(n, "unknown or unimplemented authentication algorithm %v", n)
			}
			k, err := p.algKey(n, "authentication", true)
			if err != nil {
				return err
			}
			c.Auth = xfrm.Algorithm{Name: n.text, Key: k}
		case "-C":
			n, err := p.algName(t, &haveComp, "a compression algorithm")
			if err != nil {
				return err
			}
			if n.text != "deflate" {
				return p.errf(n, "unknown or unimplemented compression algorithm %v", n)
			}
			c.Comp = xfrm.Algorithm{Name: n.text}
		case "-R":
			// Use the SPI as the CPI as is: ours always does.
			if !haveComp {
				return p.errf(t, "-R applies only to -C")
			}
		default:
			return p.errf(t, "unknown option %v", t)
		}
	}
	if c.Proto == xfrm.ProtoIPComp && !haveComp {
		return p.errf(p.toks[p.i-1], "ipcomp SA needs -C deflate")
	}
	if c.Proto == xfrm.ProtoESP && !haveEnc {
		return p.errf(p.toks[p.i-1], "esp SA needs -E (use -E null with -A for integrity only)")
	}
	if c.AEAD.Name != "" && haveAuth {
		return p.errf(encTok, "%s is an AEAD algorithm: it takes no -A", c.AEAD.Name)
	}
	if c.Proto == xfrm.ProtoESP && c.Enc.Name == "null" && !haveAuth {
		return p.errf(encTok, "-E null needs -A: ESP without encryption must have integrity")
	}
	sa, err := xfrm.NewSA(*c)
	if err != nil {
		return &Error{p.file, st.Pos, strings.TrimPrefix(err.Error(), "invalid SA: ")}
	}
	xfrm.DiscardSA(sa)
	return nil
}

var ulProtos = map[string]uint8{
	"any": xfrm.ProtoAny, "icmp": xfrm.ProtoICMP, "tcp": xfrm.ProtoTCP, "udp": xfrm.ProtoUDP,
	"icmp6": xfrm.ProtoICMPv6, "ipv6-icmp": xfrm.ProtoICMPv6, "gre": 47, "esp": 50, "ah": 51,
	"ipcomp": 108, "sctp": 132, "udplite": 136, "dccp": 33, "mh": 135, "ipv6-mh": 135,
	"ip4": 4, "ipip": 4, "ipv4": 4, "ipv6": 41, "ospf": 89,
}

// selAddr parses address[/prefix][[port]].
func (p *parser) selAddr(t token) (netip.Prefix, xfrm.PortRange, error) {
	s := t.text
	var ports xfrm.PortRange
	if strings.HasSuffix(s, "]") {
		i := strings.LastIndexByte(s, '[')
		if i < 0 {
			return netip.Prefix{}, ports, p.errf(t, "unbalanced \"]\" in %s", quote(s))
		}
		ps := s[i+1 : len(s)-1]
		s = s[:i]
		if ps != "any" && ps != "*" {
			v, err := strconv.ParseUint(ps, 10, 16)
			if err != nil {
				return netip.Prefix{}, ports, p.errf(t, "invalid port %s", quote(ps))
			}
			if v != 0 {
				ports = xfrm.PortRange{Lo: uint16(v), Hi: uint16(v)}
			}
		}
	} else if strings.ContainsAny(s, "[]") {
		return netip.Prefix{}, ports, p.errf(t, "invalid address %v", t)
	}
	var pfx netip.Prefix
	if i := strings.IndexByte(s, '/'); i >= 0 {
		a, err := netip.ParseAddr(s[:i])
		if err != nil || a.Zone() != "" {
			return pfx, ports, p.errf(t, "invalid address %s", quote(s[:i]))
		}
		a = a.Unmap()
		bits, err := strconv.Atoi(s[i+1:])
		if err != nil || bits < 0 || bits > a.BitLen() {
			return pfx, ports, p.errf(t, "invalid prefix length %s for %v", quote(s[i+1:]), a)
		}
		pfx = netip.PrefixFrom(a, bits)
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return pfx, ports, p.errf(t, "invalid address %s", quote(s))
		}
		a = a.Unmap()
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	return pfx.Masked(), ports, nil
}

func (p *parser) spd(st *Statement) error {
	p.skipFamilyFlags()
	pol := &st.Policy
	ts, err := p.word("a source address range")
	if err != nil {
		return err
	}
	if pol.Sel.Src, pol.Sel.SrcPorts, err = p.selAddr(ts); err != nil {
		return err
	}
	td, err := p.word("a destination address range")
	if err != nil {
		return err
	}
	if pol.Sel.Dst, pol.Sel.DstPorts, err = p.selAddr(td); err != nil {
		return err
	}
	if pol.Sel.Src.Addr().Is4() != pol.Sel.Dst.Addr().Is4() {
		return p.errf(td, "source %v and destination %v are of different address families", pol.Sel.Src, pol.Sel.Dst)
	}
	tu, err := p.word("an upper-layer protocol")
	if err != nil {
		return err
	}
	proto, ok := ulProtos[tu.text]
	if !ok {
		v, err := strconv.ParseUint(tu.text, 10, 8)
		if err != nil {
			return p.errf(tu, "unknown upper-layer protocol %v", tu)
		}
		proto = uint8(v)
		if proto == 255 {
			proto = xfrm.ProtoAny
		}
	}
	pol.Sel.Proto = proto
	if proto == xfrm.ProtoICMP || proto == xfrm.ProtoICMPv6 || proto == 135 {
		// "icmp6 135,0": type and code ride in the port fields. Each
		// is exact, 0 included: "icmp 0" is the IPv4 echo reply, not
		// every ICMP type. "any,3" names a code of any type.
		if t := p.peek(); t.kind == tokWord && (t.text != "" && t.text[0] >= '0' && t.text[0] <= '9' || strings.HasPrefix(t.text, "any,")) {
			p.next()
			if !pol.Sel.SrcPorts.IsAny() || !pol.Sel.DstPorts.IsAny() {
				return p.errf(t, "ports given with an ICMP type")
			}
			typ, code, hasCode := strings.Cut(t.text, ",")
			if typ != "any" {
				v, err := strconv.ParseUint(typ, 10, 8)
				if err != nil {
					return p.errf(t, "invalid ICMP type %s", quote(typ))
				}
				pol.Sel.SrcPorts = xfrm.Port(uint16(v))
			}
			if hasCode {
				v, err := strconv.ParseUint(code, 10, 8)
				if err != nil {
					return p.errf(t, "invalid ICMP code %s", quote(code))
				}
				pol.Sel.DstPorts = xfrm.Port(uint16(v))
			}
		}
	}
	if err := pol.Sel.Validate(); err != nil {
		return p.errf(ts, "%v", err)
	}
	return p.policy(st)
}

func (p *parser) policy(st *Statement) error {
	pol := &st.Policy
	t := p.next()
	if t.kind != tokWord || t.text != "-P" {
		return p.errf(t, "expected -P, found %v", t)
	}
	d, err := p.word("a direction")
	if err != nil {
		return err
	}
	switch d.text {
	case "in":
		pol.Dir = xfrm.DirIn
	case "out":
		pol.Dir = xfrm.DirOut
	case "fwd":
		pol.Dir = xfrm.DirFwd
	default:
		return p.errf(d, "unknown direction %v (want in, out or fwd)", d)
	}
	pol.Priority = PriorityDefault
	if t := p.peek(); t.kind == tokWord && (t.text == "prio" || t.text == "priority") {
		p.next()
		if err := p.priority(pol); err != nil {
			return err
		}
	}
	a := p.peek()
	if st.Cmd == "spddelete" && a.kind == tokSemi {
		p.next()
		return nil
	}
	a = p.next()
	if a.kind != tokWord {
		return p.errf(a, "expected a policy action (ipsec, none or discard), found %v", a)
	}
	switch a.text {
	case "ipsec":
		pol.Action = xfrm.ActionProtect
	case "none", "bypass":
		pol.Action = xfrm.ActionBypass
	case "discard":
		pol.Action = xfrm.ActionDiscard
	case "entrust":
		return p.errf(a, "policy action entrust is not supported")
	default:
		return p.errf(a, "unknown policy action %v (want ipsec, none or discard)", a)
	}
	for {
		t := p.next()
		if t.kind == tokSemi {
			break
		}
		if t.kind != tokWord {
			return p.errf(t, "expected a request or \";\", found %v", t)
		}
		if pol.Action != xfrm.ActionProtect {
			return p.errf(t, "a %s policy takes no requests", a.text)
		}
		tmpl, err := p.request(t, pol.Dir)
		if err != nil {
			return err
		}
		if len(pol.Templates) == 4 {
			return p.errf(t, "more than 4 requests")
		}
		pol.Templates = append(pol.Templates, tmpl)
	}
	if pol.Action == xfrm.ActionProtect && len(pol.Templates) == 0 && st.Cmd != "spddelete" {
		return p.errf(a, "an ipsec policy needs at least one request (e.g. esp/transport//require)")
	}
	return nil
}

func (p *parser) priority(pol *xfrm.Policy) error {
	t, err := p.word("a priority")
	if err != nil {
		return err
	}
	var base uint32
	switch t.text {
	case "low":
		base = PriorityLow
	case "def", "default":
		base = PriorityDefault
	case "high":
		base = PriorityHigh
	default:
		// A bare offset from the default: positive means preferred.
		s := t.text
		neg := false
		if s == "-" {
			n, err := p.word("a priority offset")
			if err != nil {
				return err
			}
			s, t = n.text, n
			neg = true
		} else if strings.HasPrefix(s, "-") {
			s, neg = s[1:], true
		} else if strings.HasPrefix(s, "+") {
			s = s[1:]
		}
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return p.errf(t, "invalid priority %v", t)
		}
		if neg {
			if v > math.MaxInt32 {
				return p.errf(t, "priority offset %d out of range", v)
			}
			pol.Priority = PriorityDefault + uint32(v)
		} else {
			if v > PriorityDefault {
				return p.errf(t, "priority offset %d out of range", v)
			}
			pol.Priority = PriorityDefault - uint32(v)
		}
		return nil
	}
	pol.Priority = base
	n := p.peek()
	if n.kind != tokWord || n.text == "" || (n.text[0] != '+' && n.text[0] != '-') {
		return nil
	}
	p.next()
	sign, s := n.text[0], n.text[1:]
	if s == "" {
		o, err := p.word("a priority offset")
		if err != nil {
			return err
		}
		s, n = o.text, o
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return p.errf(n, "invalid priority offset %s", quote(s))
	}
	if sign == '+' {
		if v > priorityOffsetNegativeMax {
			return p.errf(n, "priority offset %d out of range", v)
		}
		pol.Priority = base - uint32(v)
	} else {
		if v > priorityOffsetPositiveMax {
			return p.errf(n, "priority offset %d out of range", v)
		}
		pol.Priority = base + uint32(v)
	}
	return nil
}

// request parses proto/mode/src-dst/level.
func (p *parser) request(t token, dir xfrm.Dir) (xfrm.Template, error) {
	var tm xfrm.Template
	parts := strings.Split(t.text, "/")
	if len(parts) < 2 {
		return tm, p.errf(t, "request %v needs at least protocol/mode", t)
	}
	if len(parts) > 4 {
		return tm, p.errf(t, "request %v has too many fields", t)
	}
	switch parts[0] {
	case "esp":
		tm.Proto = xfrm.ProtoESP
	case "ah":
		tm.Proto = xfrm.ProtoAH
	case "ipcomp":
		tm.Proto = xfrm.ProtoIPComp
	default:
		return tm, p.errf(t, "unknown request protocol %s", quote(parts[0]))
	}
	switch parts[1] {
	case "transport":
		tm.Mode = xfrm.ModeTransport
	case "tunnel":
		tm.Mode = xfrm.ModeTunnel
	default:
		return tm, p.errf(t, "unknown request mode %s", quote(parts[1]))
	}
	if len(parts) > 2 && parts[2] != "" {
		s, d, ok := strings.Cut(parts[2], "-")
		if !ok {
			return tm, p.errf(t, "request endpoints %s must be src-dst", quote(parts[2]))
		}
		a, err1 := netip.ParseAddr(s)
		b, err2 := netip.ParseAddr(d)
		if err1 != nil || err2 != nil {
			return tm, p.errf(t, "invalid request endpoints %s", quote(parts[2]))
		}
		a, b = a.Unmap(), b.Unmap()
		if a.Is4() != b.Is4() {
			return tm, p.errf(t, "request endpoints %v and %v are of different families", a, b)
		}
		tm.Src, tm.Dst = a, b
	}
	if tm.Mode == xfrm.ModeTunnel && !tm.Src.IsValid() {
		return tm, p.errf(t, "tunnel request %v needs endpoints src-dst", t)
	}
	tm.Level = xfrm.LevelDefault
	if len(parts) > 3 && parts[3] != "" {
		lv, id, hasID := strings.Cut(parts[3], ":")
		switch lv {
		case "default":
			tm.Level = xfrm.LevelDefault
		case "use":
			tm.Level = xfrm.LevelUse
		case "require":
			tm.Level = xfrm.LevelRequire
		case "unique":
			tm.Level = xfrm.LevelUnique
		default:
			return tm, p.errf(t, "unknown level %s (want default, use, require or unique[:id])", quote(lv))
		}
		if hasID {
			if lv != "unique" {
				return tm, p.errf(t, "only unique takes an id")
			}
			v, err := strconv.ParseUint(id, 10, 32)
			if err != nil || v == 0 {
				return tm, p.errf(t, "invalid unique id %s", quote(id))
			}
			tm.ReqID = uint32(v)
		}
	}
	return tm, nil
}

var errNoop = errors.New("noop")

// quote quotes part of a token for an error message, or describes it when
// it may be key material (see token.String).
func quote(s string) string {
	return token{kind: tokWord, text: s}.String()
}
