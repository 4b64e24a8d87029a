package daemon

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// From configuration to exchange. Until the multi-proposal and
// certificate fields of exchange.Config land (the ikeauth work), a
// connection is reduced to the first transform of each type of its first
// IKE proposal and of its child's first ESP proposal, and to PSK
// PSK or certificate authentication; both sides of a test or an interop
// run must configure those first. When exchange.Config gains Proposals and certificate
// fields, suiteOf and pskFor give way to passing Connection.Proposals,
// Child.Proposals and the Auth rounds through.

// ikeSuiteOf returns the first transform of each type of the first IKE
// proposal.
func ikeSuiteOf(ps []message.Proposal) (exchange.IKESuite, error) {
	var s exchange.IKESuite
	if len(ps) == 0 {
		return s, errors.New("no IKE proposal")
	}
	var encr, integ, prf, ke bool
	for _, t := range ps[0].Transforms {
		switch {
		case t.Type == message.TransformENCR && !encr:
			s.Encr, encr = t.ID, true
			s.KeyBits, _ = t.KeyLength()
		case t.Type == message.TransformINTEG && !integ:
			s.Integ, integ = t.ID, true
		case t.Type == message.TransformPRF && !prf:
			s.PRF, prf = t.ID, true
		case t.Type == message.TransformKE && !ke:
			s.KE, ke = t.ID, true
		}
	}
	if !encr || !prf || !ke {
		return s, errors.New("IKE proposal lacks an encryption, PRF or key exchange transform")
	}
	return s, nil
}

// espSuiteOf returns the first transform of each type of the first ESP
// proposal.
func espSuiteOf(ps []message.Proposal) (exchange.ESPSuite, error) {
	var s exchange.ESPSuite
	if len(ps) == 0 {
		return s, errors.New("no ESP proposal")
	}
	var encr, integ bool
	for _, t := range ps[0].Transforms {
		switch {
		case t.Type == message.TransformENCR && !encr:
			s.Encr, encr = t.ID, true
			s.KeyBits, _ = t.KeyLength()
		case t.Type == message.TransformINTEG && !integ:
			s.Integ, integ = t.ID, true
		}
	}
	if !encr {
		return s, errors.New("ESP proposal lacks an encryption transform")
	}
	return s, nil
}

// addrID is the identity swanctl uses when none is configured: the IKE
// address.
func addrID(a netip.Addr) exchange.Identity {
	a = a.Unmap()
	if a.Is4() {
		return exchange.Identity{Type: message.ID_IPV4_ADDR, Data: a.AsSlice()}
	}
	return exchange.Identity{Type: message.ID_IPV6_ADDR, Data: a.AsSlice()}
}

func sameID(a, b exchange.Identity) bool {
	return a.Type == b.Type && string(a.Data) == string(b.Data)
}

// pskFor picks the shared key for the two identities as swanctl does: a
// secret naming both beats one naming either, which beats one naming
// none (any).
func pskFor(cfg *config.Config, local, remote exchange.Identity) []byte {
	var best []byte
	bestScore := -1
	for _, s := range cfg.Secrets {
		if s.Type != "ike" || len(s.Data) == 0 {
			continue
		}
		score := 0
		if len(s.IDs) > 0 {
			ml, mr := false, false
			for _, id := range s.IDs {
				ml = ml || sameID(id, local)
				mr = mr || sameID(id, remote)
			}
			switch {
			case ml && mr:
				score = 3
			case ml || mr:
				score = 2
			default:
				continue
			}
		} else {
			score = 1
		}
		if score > bestScore {
			best, bestScore = s.Data, score
		}
	}
	return best
}

// hostTS is the traffic selector of one address (swanctl's "dynamic").
func hostTS(a netip.Addr) message.TrafficSelector {
	a = a.Unmap()
	t := message.TrafficSelector{TSType: message.TS_IPV4_ADDR_RANGE, Start: a, End: a, EndPort: 65535}
	if a.Is6() {
		t.TSType = message.TS_IPV6_ADDR_RANGE
	}
	return t
}

// childTS returns a child's selectors with swanctl's "dynamic" replaced
// by the IKE address of that side: no selectors at all, or a selector of
// no type and no addresses (the parser's dynamic, which may carry a
// protocol and ports).
func childTS(ch *config.Child, local, remote netip.Addr) (l, r []message.TrafficSelector) {
	return resolveTS(ch.LocalTS, local), resolveTS(ch.RemoteTS, remote)
}

func resolveTS(ts []message.TrafficSelector, a netip.Addr) []message.TrafficSelector {
	if len(ts) == 0 {
		return []message.TrafficSelector{hostTS(a)}
	}
	out := make([]message.TrafficSelector, 0, len(ts))
	for _, t := range ts {
		if t.TSType == 0 && !t.Start.IsValid() && !t.End.IsValid() && t.Data == nil {
			h := hostTS(a)
			h.IPProto, h.StartPort, h.EndPort = t.IPProto, t.StartPort, t.EndPort
			t = h
		}
		out = append(out, t)
	}
	return out
}

// exchangeConfig turns a connection and one of its children into the
// exchange's configuration between local and remote: every proposal, PSK
// or certificate authentication, certificate and fragmentation settings.
func exchangeConfig(cfg *config.Config, c *config.Connection, ch *config.Child, local, remote netip.AddrPort) (exchange.Config, error) {
	var x exchange.Config
	if len(c.Local) != 1 || len(c.Remote) != 1 {
		return x, fmt.Errorf("%s: connection %s: exactly one local and one remote authentication round is supported", c.Pos, c.Name)
	}
	if len(c.Proposals) == 0 {
		return x, fmt.Errorf("%s: connection %s: no IKE proposal", c.Pos, c.Name)
	}
	if len(ch.Proposals) == 0 {
		return x, fmt.Errorf("%s: child %s: no ESP proposal", ch.Pos, ch.Name)
	}
	la, ra := c.Local[0], c.Remote[0]
	lid, rid := la.ID, ra.ID
	if len(lid.Data) == 0 && la.Method == config.AuthPSK {
		// With a certificate the exchange takes its subject DN.
		lid = addrID(local.Addr())
	}
	if len(rid.Data) == 0 && ra.Method == config.AuthPSK {
		// %any: the exchange wants one identity to check the PSK of;
		// the peer's address is what swanctl assumes when none is given.
		// A certificate proves any identity it holds.
		rid = addrID(remote.Addr())
	}
	var lauth, rauth exchange.Auth
	if la.Method == config.AuthPSK || ra.Method == config.AuthPSK {
		psk := pskFor(cfg, lid, rid)
		if psk == nil {
			return x, fmt.Errorf("%s: connection %s: no ike secret for %s / %s", c.Pos, c.Name, idString(lid), idString(rid))
		}
		if la.Method == config.AuthPSK {
			lauth = exchange.Auth{Method: exchange.AuthPSK, PSK: psk}
		}
		if ra.Method == config.AuthPSK {
			rauth = exchange.Auth{Method: exchange.AuthPSK, PSK: psk}
		}
	}
	if la.Method == config.AuthPubkey {
		if len(la.Certs) == 0 || la.Key == nil {
			return x, fmt.Errorf("%s: connection %s: local public key authentication without a certificate and its private key", la.Pos, c.Name)
		}
		lauth = exchange.Auth{Method: exchange.AuthPubkey, Certs: la.Certs, Key: la.Key,
			Hashes: la.Schemes, PSS: la.KeyType == config.KeyRSAPSS}
	}
	if ra.Method == config.AuthPubkey {
		// remote cacerts, else every CA the file loaded (swanctl's
		// x509ca/ and cacerts of any connection), as charon does.
		cas := ra.CACerts
		if len(cas) == 0 {
			cas = cfg.Authorities
		}
		if len(cas) == 0 && len(ra.Certs) == 0 {
			return x, fmt.Errorf("%s: connection %s: remote public key authentication without a CA or a pinned certificate", ra.Pos, c.Name)
		}
		rauth = exchange.Auth{Method: exchange.AuthPubkey, Certs: ra.Certs, CACerts: cas, Hashes: ra.Schemes}
	}
	if lauth.Method == 0 || rauth.Method == 0 {
		return x, fmt.Errorf("%s: connection %s: authentication method not supported by the daemon", c.Pos, c.Name)
	}
	lts, rts := childTS(ch, local.Addr(), remote.Addr())
	// Every proposal goes to the exchange, which negotiates as charon
	// does (a responder in its own order, an initiator offering all).
	return exchange.Config{
		Local: local, Remote: remote, LocalID: lid, RemoteID: rid, LocalAuth: lauth, RemoteAuth: rauth,
		IKEProposals: c.Proposals, ESPProposals: ch.Proposals, NoCertReq: !c.SendCertReq,
		SendCert: exchange.SendCert(c.SendCert), Fragmentation: exchange.Fragmentation(c.Fragmentation),
		LocalTS: lts, RemoteTS: rts, Mode: ch.Mode, ReplayWindow: ch.ReplayWindow, ForceEncap: c.Encap,
	}, nil
}

// idString renders an identity for logs and listings.
func idString(id exchange.Identity) string {
	switch id.Type {
	case message.ID_IPV4_ADDR, message.ID_IPV6_ADDR:
		if a, ok := netip.AddrFromSlice(id.Data); ok {
			return a.String()
		}
	case message.ID_FQDN, message.ID_RFC822_ADDR:
		return string(id.Data)
	}
	return fmt.Sprintf("id-type-%d:%x", id.Type, id.Data)
}

// prefixMatch reports whether a lies in one of ps (empty: any).
func prefixMatch(ps []netip.Prefix, a netip.Addr) bool {
	if len(ps) == 0 {
		return true
	}
	for _, p := range ps {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

// remoteAddr is where an initiator sends: the first remote address that is
// a single host.
func remoteAddr(c *config.Connection) (netip.Addr, bool) {
	for _, p := range c.RemoteAddrs {
		if p.IsSingleIP() {
			return p.Addr().Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// tsSelector turns a pair of traffic selectors into an xfrm selector. The
// SPD holds prefixes: an address range that is not one is refused, as is
// a port range other than one port or all.
func tsSelector(local, remote message.TrafficSelector) (xfrm.Selector, error) {
	src, err := tsPrefix(local)
	if err != nil {
		return xfrm.Selector{}, err
	}
	dst, err := tsPrefix(remote)
	if err != nil {
		return xfrm.Selector{}, err
	}
	if src.Addr().Is4() != dst.Addr().Is4() {
		return xfrm.Selector{}, errors.New("traffic selectors of two families")
	}
	proto := local.IPProto
	if proto == 0 {
		proto = remote.IPProto
	} else if remote.IPProto != 0 && remote.IPProto != proto {
		return xfrm.Selector{}, errors.New("traffic selectors of two protocols")
	}
	return xfrm.Selector{Src: src, Dst: dst, Proto: proto,
		SrcPorts: tsPorts(local), DstPorts: tsPorts(remote)}, nil
}

func tsPorts(t message.TrafficSelector) xfrm.PortRange {
	if t.StartPort == 0 && t.EndPort == 65535 {
		return xfrm.AnyPorts
	}
	return xfrm.PortRange{Lo: t.StartPort, Hi: t.EndPort, Specified: true}
}

// tsPrefix returns the prefix an address range is, if it is one.
func tsPrefix(t message.TrafficSelector) (netip.Prefix, error) {
	if t.TSType != message.TS_IPV4_ADDR_RANGE && t.TSType != message.TS_IPV6_ADDR_RANGE {
		return netip.Prefix{}, fmt.Errorf("traffic selector type %d is not supported", t.TSType)
	}
	s, e := t.Start.Unmap(), t.End.Unmap()
	for bits := s.BitLen(); bits >= 0; bits-- {
		p := netip.PrefixFrom(s, bits).Masked()
		if p.Addr() != s {
			break
		}
		if lastAddr(p) == e {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("address range %v-%v is not a prefix", s, e)
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// covers reports whether every selector of got lies within one of
// conf: which configured child a CHILD SA the peer created belongs to.
func covers(conf, got []message.TrafficSelector) bool {
	if len(got) == 0 {
		return false
	}
	for _, g := range got {
		ok := false
		for _, c := range conf {
			if c.TSType == g.TSType && c.Start.IsValid() && g.Start.IsValid() &&
				(c.IPProto == 0 || c.IPProto == g.IPProto) &&
				c.Start.Compare(g.Start) <= 0 && c.End.Compare(g.End) >= 0 &&
				c.StartPort <= g.StartPort && c.EndPort >= g.EndPort {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
