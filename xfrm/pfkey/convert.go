package pfkey

import (
	"fmt"
	"net/netip"
	"slices"
	"syscall"

	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/esp"
)

// SATypeOf maps an IPsec protocol to its SADB_SATYPE.
func SATypeOf(p xfrm.Proto) uint8 {
	switch p {
	case xfrm.ProtoESP:
		return SATypeESP
	case xfrm.ProtoAH:
		return SATypeAH
	case xfrm.ProtoIPComp:
		return SATypeIPComp
	}
	return SATypeUnspec
}

// ProtoOf maps an SADB_SATYPE to its IPsec protocol (0 for UNSPEC or others).
func ProtoOf(satype uint8) xfrm.Proto {
	switch satype {
	case SATypeESP:
		return xfrm.ProtoESP
	case SATypeAH:
		return xfrm.ProtoAH
	case SATypeIPComp:
		return xfrm.ProtoIPComp
	}
	return 0
}

// algID returns the PF_KEY number of an algorithm of the esp table.
func algID(a esp.AlgInfo) uint8 {
	if a.SADB != 0 {
		return a.SADB
	}
	if a.LinuxName == "rfc7539esp(chacha20,poly1305)" {
		return EAlgPrivateChaCha20Poly1305
	}
	return 0
}

// AlgorithmByID finds the algorithm of the esp table PF_KEY numbers id:
// an integrity algorithm (sadb_sa_auth) for esp.KindIntegrity, else an
// encryption or AEAD one (sadb_sa_encrypt).
func AlgorithmByID(kind esp.Kind, id uint8) (esp.AlgInfo, bool) {
	auth := kind == esp.KindIntegrity
	for _, a := range esp.Algorithms() {
		if (a.Kind == esp.KindIntegrity) == auth && algID(a) == id {
			return a, true
		}
	}
	return esp.AlgInfo{}, false
}

// AlgorithmIDs returns the PF_KEY numbers of an SA's algorithms, or an
// error naming an algorithm PF_KEY cannot express.
func AlgorithmIDs(c *xfrm.SAConfig) (auth, enc uint8, err error) {
	look := func(kind esp.Kind, a xfrm.Algorithm) (uint8, error) {
		info, err := esp.Lookup(kind, a.Name, a.ICVBits)
		if err != nil {
			return 0, err
		}
		id := algID(info)
		if id == 0 {
			return 0, fmt.Errorf("algorithm %s has no PF_KEY number", a.Name)
		}
		return id, nil
	}
	switch {
	case c.Proto == xfrm.ProtoIPComp:
		if c.Comp.Name != "" && c.Comp.Name != "deflate" {
			return 0, 0, fmt.Errorf("compression algorithm %s has no PF_KEY number", c.Comp.Name)
		}
		return 0, CAlgDeflate, nil
	case c.AEAD.Name != "":
		enc, err = look(esp.KindAEAD, c.AEAD)
	case c.Enc.Name != "":
		enc, err = look(esp.KindEncryption, c.Enc)
	}
	if err != nil {
		return 0, 0, err
	}
	if c.Auth.Name != "" {
		auth, err = look(esp.KindIntegrity, c.Auth)
	}
	return auth, enc, err
}

func keyExt(k []byte) *Key {
	if len(k) == 0 {
		return nil
	}
	return &Key{Bits: uint16(len(k) * 8), Data: append([]byte(nil), k...)}
}

// keyBytes returns a key extension's bytes (nil without one); PF_KEY keys
// are whole bytes here.
func keyBytes(k *Key, what string) ([]byte, error) {
	if k == nil {
		return nil, nil
	}
	if k.Bits%8 != 0 {
		return nil, errorf(syscall.EINVAL, "%s key of %d bits", what, k.Bits)
	}
	return k.Data, nil
}

func hostAddr(a netip.Addr, proto uint8) *Address {
	return &Address{Proto: proto, PrefixLen: uint8(a.BitLen()), Sockaddr: Sockaddr{Addr: a}}
}

func modeToPF(m xfrm.Mode) uint8 {
	if m == xfrm.ModeTunnel {
		return ModeTunnel
	}
	return ModeTransport
}

func modeFromPF(m uint8) (xfrm.Mode, error) {
	switch m {
	case ModeAny, ModeTransport:
		return xfrm.ModeTransport, nil
	case ModeTunnel:
		return xfrm.ModeTunnel, nil
	}
	return 0, errorf(syscall.EINVAL, "mode %d is not supported", m)
}

func lifetimeExt(l *xfrm.Lifetime) *Lifetime {
	return &Lifetime{Allocations: uint32(min(l.Packets, 0xffffffff)), Bytes: l.Bytes, AddTime: l.AddSeconds, UseTime: l.UseSeconds}
}

func lifetimeFrom(l *Lifetime) xfrm.Lifetime {
	if l == nil {
		return xfrm.Lifetime{}
	}
	return xfrm.Lifetime{Packets: uint64(l.Allocations), Bytes: l.Bytes, AddSeconds: l.AddTime, UseSeconds: l.UseTime}
}

// SAMsg builds an ADD-style message for an SA configuration: SA, SA2,
// addresses, lifetimes and (withKeys) keys. The caller sets Type, Seq, PID.
func SAMsg(c *xfrm.SAConfig, withKeys bool) (*Msg, error) {
	auth, enc, err := AlgorithmIDs(c)
	if err != nil {
		return nil, errorf(syscall.EINVAL, "%v", err)
	}
	st := SATypeOf(c.Proto)
	if st == SATypeUnspec {
		return nil, errorf(syscall.EINVAL, "protocol %v", c.Proto)
	}
	m := &Msg{
		SAType: st,
		SA:     &SA{SPI: c.SPI, Replay: uint8(min(c.ReplayWindow, 255)), State: SAStateMature, Auth: auth, Encrypt: enc},
		SA2:    &SA2{Mode: modeToPF(c.Mode), ReqID: c.ReqID, Sequence: 0},
		Src:    hostAddr(c.Src, c.Sel.Proto),
		Dst:    hostAddr(c.Dst, c.Sel.Proto),
	}
	if c.Hard != (xfrm.Lifetime{}) {
		m.LifetimeHard = lifetimeExt(&c.Hard)
	}
	if c.Soft != (xfrm.Lifetime{}) {
		m.LifetimeSoft = lifetimeExt(&c.Soft)
	}
	if err := addEncap(m, c); err != nil {
		return nil, err
	}
	if withKeys {
		m.KeyAuth = keyExt(c.Auth.Key)
		if c.AEAD.Name != "" {
			m.KeyEncrypt = keyExt(c.AEAD.Key)
		} else {
			m.KeyEncrypt = keyExt(c.Enc.Key)
		}
	}
	return m, nil
}

// StateMsg describes a live SA as Linux's pfkey_xfrm_state2msg does, with
// the current lifetime and, for a UDP-encapsulated SA, the NAT-T type and
// ports. Larval SAs carry only SA, SA2 and addresses.
func StateMsg(sa *xfrm.SA, withKeys bool) *Msg {
	c := &sa.Config
	larval := sa.State() == xfrm.StateLarval
	var m *Msg
	if !larval {
		// The lifetimes in force, which an UPDATE may have changed
		// since the SA was added (xfrm.SA.SetLifetimes).
		cur := *c
		cur.Soft, cur.Hard = sa.Lifetimes()
		m, _ = SAMsg(&cur, withKeys)
	}
	if m == nil {
		// Larval, or an algorithm without a PF_KEY number: describe the
		// rest.
		m = &Msg{SAType: SATypeOf(c.Proto), SA: &SA{SPI: c.SPI},
			SA2: &SA2{Mode: modeToPF(c.Mode), ReqID: c.ReqID}, Src: hostAddr(c.Src, 0), Dst: hostAddr(c.Dst, 0)}
		if !larval {
			m.SA.Replay = uint8(min(c.ReplayWindow, 255))
			// Cannot fail: the SA was built from a valid config.
			_ = addEncap(m, c)
		}
	}
	switch sa.State() {
	case xfrm.StateLarval:
		m.SA.State = SAStateLarval
	case xfrm.StateMature:
		m.SA.State = SAStateMature
	case xfrm.StateDying:
		m.SA.State = SAStateDying
	default:
		m.SA.State = SAStateDead
	}
	cur := &Lifetime{Allocations: uint32(min(sa.Counters.Packets.Load(), 0xffffffff)), Bytes: sa.Counters.Bytes.Load(),
		AddTime: uint64(sa.Added().Unix())}
	if fu := sa.FirstUse(); !fu.IsZero() {
		cur.UseTime = uint64(fu.Unix())
	}
	m.LifetimeCurrent = cur
	return m
}

// ConfigFromMsg turns an ADD or UPDATE message into an SA configuration,
// checking what Linux's pfkey_msg2xfrm_state checks.
func ConfigFromMsg(m *Msg) (xfrm.SAConfig, error) {
	var c xfrm.SAConfig
	if m.SA == nil || m.Src == nil || m.Dst == nil {
		return c, errorf(syscall.EINVAL, "SA, source and destination address extensions are required")
	}
	c.Proto = ProtoOf(m.SAType)
	if c.Proto == 0 {
		return c, errorf(syscall.EINVAL, "SA type %d", m.SAType)
	}
	if m.Src.Addr.Is4() != m.Dst.Addr.Is4() {
		return c, errorf(syscall.EINVAL, "source %v and destination %v are of different families", m.Src.Addr, m.Dst.Addr)
	}
	if m.SecCtx != nil {
		return c, errorf(syscall.EOPNOTSUPP, "security contexts are not supported")
	}
	c.SPI = m.SA.SPI
	c.Src, c.Dst = m.Src.Addr, m.Dst.Addr
	c.ReplayWindow = uint32(m.SA.Replay)
	if p := m.Src.Proto; p != 0 && p != ULProtoAny {
		c.Sel.Proto = p
	}
	var err error
	if m.SA2 != nil {
		mode, err := modeFromPF(m.SA2.Mode)
		if err != nil {
			return c, err
		}
		c.Mode = mode
		c.ReqID = m.SA2.ReqID
	}
	if c.Encap, err = encapFromMsg(m, c.Proto); err != nil {
		return c, err
	}
	if c.Proto == xfrm.ProtoIPComp {
		// sadb_sa_encrypt carries the compression algorithm.
		if m.SA.Encrypt != CAlgDeflate || m.SA.Auth != AAlgNone || m.KeyEncrypt != nil || m.KeyAuth != nil {
			return c, errorf(syscall.EINVAL, "IPComp takes only compression algorithm %d (deflate)", CAlgDeflate)
		}
		c.Comp = xfrm.Algorithm{Name: "deflate"}
		c.Hard = lifetimeFrom(m.LifetimeHard)
		c.Soft = lifetimeFrom(m.LifetimeSoft)
		return c, nil
	}
	if m.SA.Encrypt != EAlgNone {
		a, ok := AlgorithmByID(esp.KindEncryption, m.SA.Encrypt)
		if !ok {
			return c, errorf(syscall.EINVAL, "encryption algorithm %d is not supported", m.SA.Encrypt)
		}
		key, err := keyBytes(m.KeyEncrypt, "encryption")
		if err != nil {
			return c, err
		}
		alg := xfrm.Algorithm{Name: a.SetkeyNames[0], Key: key}
		if a.Kind == esp.KindAEAD {
			c.AEAD = alg
		} else {
			c.Enc = alg
		}
	} else if m.KeyEncrypt != nil {
		return c, errorf(syscall.EINVAL, "encryption key without an encryption algorithm")
	}
	if m.SA.Auth != AAlgNone {
		a, ok := AlgorithmByID(esp.KindIntegrity, m.SA.Auth)
		if !ok {
			return c, errorf(syscall.EINVAL, "authentication algorithm %d is not supported", m.SA.Auth)
		}
		key, err := keyBytes(m.KeyAuth, "authentication")
		if err != nil {
			return c, err
		}
		c.Auth = xfrm.Algorithm{Name: a.SetkeyNames[0], Key: key}
	} else if m.KeyAuth != nil {
		return c, errorf(syscall.EINVAL, "authentication key without an authentication algorithm")
	}
	c.Hard = lifetimeFrom(m.LifetimeHard)
	c.Soft = lifetimeFrom(m.LifetimeSoft)
	return c, nil
}

func dirToPF(d xfrm.Dir) uint8 { return uint8(d) + 1 }

func dirFromPF(d uint8) (xfrm.Dir, error) {
	if d < DirInbound || d > DirFwd {
		return 0, errorf(syscall.EINVAL, "policy direction %d", d)
	}
	return xfrm.Dir(d - 1), nil
}

// selAddr encodes one side of a selector. A selector with no address on
// either side (both families) is expressed as IPv4 0.0.0.0/0 when the
// other side gives no family: PF_KEY has no family-less address.
func selAddr(p netip.Prefix, other netip.Prefix, ports xfrm.PortRange, proto uint8) *Address {
	a := &Address{Proto: proto}
	if proto == xfrm.ProtoAny {
		a.Proto = ULProtoAny
	}
	switch {
	case p.IsValid():
		a.Addr, a.PrefixLen = p.Addr(), uint8(p.Bits())
	case other.IsValid() && other.Addr().Is6():
		a.Addr = netip.IPv6Unspecified()
	default:
		a.Addr = netip.IPv4Unspecified()
	}
	if !ports.IsAny() {
		a.Port = ports.Lo
	}
	return a
}

// PolicyMsg builds an SPDADD-style message for p (addresses and X_POLICY).
func PolicyMsg(p *xfrm.Policy) (*Msg, error) {
	s := &p.Sel
	icmp := s.Proto == xfrm.ProtoICMP || s.Proto == xfrm.ProtoICMPv6 || s.Proto == 135
	for i, r := range []xfrm.PortRange{s.SrcPorts, s.DstPorts} {
		if !r.IsAny() && r.Lo != r.Hi {
			return nil, errorf(syscall.EINVAL, "port range %d-%d cannot be expressed in PF_KEY", r.Lo, r.Hi)
		}
		// PF_KEY's sadb_address port 0 means any (Linux's af_key sets
		// no port mask for it), so an exact 0 cannot be sent. An ICMP
		// code 0 goes as 0, any code of the type, which is what
		// "icmp6 135,0" has always meant over PF_KEY (KAME, af_key).
		// A port or an ICMP type 0 (the echo reply) is refused: it
		// would become every port, or all of ICMP.
		if !r.IsAny() && r.Lo == 0 && !(icmp && i == 1) {
			return nil, errorf(syscall.EINVAL, "port or ICMP type 0 cannot be expressed in PF_KEY (0 means any there)")
		}
	}
	pol := &Policy{Dir: dirToPF(p.Dir), ID: p.ID, Priority: p.Priority}
	switch p.Action {
	case xfrm.ActionBypass:
		pol.Type = PolicyNone
	case xfrm.ActionDiscard:
		pol.Type = PolicyDiscard
	default:
		pol.Type = PolicyIPsec
	}
	for _, t := range p.Templates {
		r := IPsecRequest{Proto: uint16(t.Proto), Mode: modeToPF(t.Mode), Level: uint8(t.Level), ReqID: t.ReqID}
		if t.Mode == xfrm.ModeTunnel {
			if !t.Src.IsValid() || !t.Dst.IsValid() {
				return nil, errorf(syscall.EINVAL, "tunnel template without endpoints")
			}
			r.Src, r.Dst = &Sockaddr{Addr: t.Src}, &Sockaddr{Addr: t.Dst}
		}
		pol.Requests = append(pol.Requests, r)
	}
	return &Msg{
		Src:    selAddr(s.Src, s.Dst, s.SrcPorts, s.Proto),
		Dst:    selAddr(s.Dst, s.Src, s.DstPorts, s.Proto),
		Policy: pol,
	}, nil
}

// PolicyFromMsg turns an SPDADD/SPDUPDATE message into a policy, checking
// what Linux's pfkey_spdadd checks.
func PolicyFromMsg(m *Msg) (*xfrm.Policy, error) {
	if m.Src == nil || m.Dst == nil || m.Policy == nil {
		return nil, errorf(syscall.EINVAL, "source and destination address and policy extensions are required")
	}
	pol := m.Policy
	dir, err := dirFromPF(pol.Dir)
	if err != nil {
		return nil, err
	}
	p := &xfrm.Policy{Dir: dir, ID: pol.ID, Priority: pol.Priority}
	switch pol.Type {
	case PolicyDiscard:
		p.Action = xfrm.ActionDiscard
	case PolicyNone, PolicyBypass:
		p.Action = xfrm.ActionBypass
	case PolicyIPsec:
		p.Action = xfrm.ActionProtect
	default:
		return nil, errorf(syscall.EINVAL, "policy type %d", pol.Type)
	}
	if m.Src.Addr.Is4() != m.Dst.Addr.Is4() {
		return nil, errorf(syscall.EINVAL, "selector families differ")
	}
	if m.Src.Proto != m.Dst.Proto {
		return nil, errorf(syscall.EINVAL, "source and destination upper-layer protocols differ")
	}
	s := &p.Sel
	s.Src = netip.PrefixFrom(m.Src.Addr, int(m.Src.PrefixLen)).Masked()
	s.Dst = netip.PrefixFrom(m.Dst.Addr, int(m.Dst.PrefixLen)).Masked()
	if m.Src.Proto != ULProtoAny {
		s.Proto = m.Src.Proto
	}
	if m.Src.Port != 0 {
		s.SrcPorts = xfrm.PortRange{Lo: m.Src.Port, Hi: m.Src.Port}
	}
	if m.Dst.Port != 0 {
		s.DstPorts = xfrm.PortRange{Lo: m.Dst.Port, Hi: m.Dst.Port}
	}
	if p.Action == xfrm.ActionProtect && len(pol.Requests) == 0 {
		return nil, errorf(syscall.EINVAL, "an ipsec policy needs at least one request")
	}
	if p.Action != xfrm.ActionProtect && len(pol.Requests) != 0 {
		return nil, errorf(syscall.EINVAL, "a %v policy takes no requests", p.Action)
	}
	if len(pol.Requests) > 4 {
		return nil, errorf(syscall.EINVAL, "%d requests (at most 4)", len(pol.Requests))
	}
	for _, r := range pol.Requests {
		t := xfrm.Template{ReqID: r.ReqID}
		switch r.Proto {
		case uint16(xfrm.ProtoESP), uint16(xfrm.ProtoAH), uint16(xfrm.ProtoIPComp):
			t.Proto = xfrm.Proto(r.Proto)
		default:
			return nil, errorf(syscall.EINVAL, "request protocol %d", r.Proto)
		}
		switch r.Mode {
		case ModeTransport:
			t.Mode = xfrm.ModeTransport
		case ModeTunnel:
			t.Mode = xfrm.ModeTunnel
		default:
			return nil, errorf(syscall.EINVAL, "request mode %d", r.Mode)
		}
		if r.Level > LevelUnique {
			return nil, errorf(syscall.EINVAL, "request level %d", r.Level)
		}
		t.Level = xfrm.Level(r.Level)
		// Transport requests may name addresses; they constrain nothing
		// here and are dropped as Linux does.
		if t.Mode == xfrm.ModeTunnel {
			if r.Src == nil {
				return nil, errorf(syscall.EINVAL, "tunnel request without addresses")
			}
			t.Src, t.Dst = r.Src.Addr, r.Dst.Addr
		}
		p.Templates = append(p.Templates, t)
	}
	if err := s.Validate(); err != nil {
		return nil, errorf(syscall.EINVAL, "%v", err)
	}
	return p, nil
}

// supported builds the SUPPORTED extensions for ESP from the esp table.
func supported() (auth, enc *Supported) {
	auth, enc = &Supported{}, &Supported{}
	for _, a := range esp.Algorithms() {
		id := algID(a)
		if id == 0 {
			continue
		}
		lo, hi := slices.Min(a.KeySizes), slices.Max(a.KeySizes)
		alg := Alg{ID: id, IVLen: uint8(a.IVLen), MinBits: uint16(lo * 8), MaxBits: uint16(hi * 8)}
		if a.Kind == esp.KindIntegrity {
			auth.Algs = append(auth.Algs, alg)
		} else {
			enc.Algs = append(enc.Algs, alg)
		}
	}
	return auth, enc
}

// espProposal lists the combinations an ACQUIRE offers for ESP: every AEAD
// alone and every cipher (but NULL) with every MAC, with Linux's default
// lifetimes (dump_esp_combs).
func espProposal() *Proposal {
	auth, enc := supported()
	pr := &Proposal{Replay: 32}
	life := func(c Comb) Comb {
		c.SoftAddTime, c.HardAddTime = 20*60*60, 24*60*60
		c.SoftUseTime, c.HardUseTime = 7*60*60, 8*60*60
		return c
	}
	for _, e := range enc.Algs {
		a, _ := AlgorithmByID(esp.KindEncryption, e.ID)
		if a.Kind == esp.KindAEAD {
			pr.Combs = append(pr.Combs, life(Comb{Encrypt: e.ID, EncryptMinBits: e.MinBits, EncryptMaxBits: e.MaxBits}))
			continue
		}
		if e.ID == EAlgNull {
			continue
		}
		for _, h := range auth.Algs {
			pr.Combs = append(pr.Combs, life(Comb{Encrypt: e.ID, EncryptMinBits: e.MinBits, EncryptMaxBits: e.MaxBits,
				Auth: h.ID, AuthMinBits: h.MinBits, AuthMaxBits: h.MaxBits}))
		}
	}
	return pr
}

// encapFromMsg reads an ADD/UPDATE's NAT-T extensions as Linux's
// pfkey_msg2xfrm_state does (sadb_x_nat_t_type to encap_type, the two
// sadb_x_nat_t_port to encap_sport/dport, network byte order on the wire),
// checking more than it does, because a half-described encapsulation
// would make an SA that silently sends to the wrong place:
//   - only ESP is encapsulated (RFC 3948; Linux's ah_init_state and
//     ipcomp_init_state refuse x->encap with EINVAL too);
//   - the type must be UDP_ENCAP_ESPINUDP, the one the data plane speaks
//     (Linux also takes the pre-RFC ESPINUDP_NON_IKE, 1: EINVAL here);
//   - both ports are required and non-zero (Linux leaves a missing one
//     0, which no UDP datagram can carry);
//   - ports or an original address without a type are EINVAL (Linux
//     ignores them, leaving the SA unencapsulated).
//
// The NAT-OA extension (an sadb_address) is taken as the peer's original
// address when it is of the SA's family and specified; Linux 6.1 accepts
// and then zeroes it (encap_oa), as it recomputes transport checksums.
func encapFromMsg(m *Msg, proto xfrm.Proto) (xfrm.Encap, error) {
	var e xfrm.Encap
	if m.NATTType == nil {
		if m.NATTSport != nil || m.NATTDport != nil || m.NATTOA != nil {
			return e, errorf(syscall.EINVAL, "NAT-T port or original address without a NAT-T type extension")
		}
		return e, nil
	}
	if proto != xfrm.ProtoESP {
		return e, errorf(syscall.EINVAL, "NAT-T (UDP encapsulation) on a %v SA: only ESP is encapsulated", proto)
	}
	if t := m.NATTType.Type; t != uint8(xfrm.EncapESPInUDP) {
		return e, errorf(syscall.EINVAL, "NAT-T type %d: only %d (UDP_ENCAP_ESPINUDP, RFC 3948) is supported", t, xfrm.EncapESPInUDP)
	}
	if m.NATTSport == nil || m.NATTDport == nil || m.NATTSport.Port == 0 || m.NATTDport.Port == 0 {
		return e, errorf(syscall.EINVAL, "NAT-T needs a non-zero source and destination port")
	}
	e.Type = xfrm.EncapESPInUDP
	e.SPort, e.DPort = m.NATTSport.Port, m.NATTDport.Port
	if oa := m.NATTOA; oa != nil {
		if oa.Addr.Is4() != m.Src.Addr.Is4() {
			return e, errorf(syscall.EINVAL, "NAT-T original address %v is not of the SA's family", oa.Addr)
		}
		if !oa.Addr.IsUnspecified() {
			e.OA = oa.Addr
		}
	}
	return e, nil
}

// addEncap adds an SA's NAT-T extensions as Linux's
// __pfkey_xfrm_state2msg does (type, source port, destination port) and,
// when the original address is known, NAT_T_OA as an sadb_address with
// the host prefix (the layout af_key verifies on input with
// verify_address_len; ipsec-tools' pfkey_send_add_nat sends it so). The
// keepalive interval has no PF_KEY form: it is set through the Go API.
func addEncap(m *Msg, c *xfrm.SAConfig) error {
	e := &c.Encap
	if e.Type == xfrm.EncapNone {
		return nil
	}
	if c.Proto != xfrm.ProtoESP {
		return errorf(syscall.EINVAL, "NAT-T (UDP encapsulation) on a %v SA", c.Proto)
	}
	m.NATTType = &NATTType{Type: uint8(e.Type)}
	m.NATTSport = &NATTPort{Port: e.SPort}
	m.NATTDport = &NATTPort{Port: e.DPort}
	if e.OA.IsValid() && !e.OA.IsUnspecified() {
		m.NATTOA = hostAddr(e.OA, 0)
	}
	return nil
}

// NewMappingMsg builds the SADB_X_NAT_T_NEW_MAPPING that Linux's
// pfkey_send_new_mapping broadcasts to registered sockets when an
// authenticated packet of UDP-encapsulated SA sa arrives from a new
// outer address or port (the NAT's mapping changed):
//
//	HDR | SA | ADDRESS_SRC (the SA's source) | NAT_T_SPORT (the SA's
//	encap source port) | ADDRESS_DST (the new address) | NAT_T_DPORT
//	(the new port)
//
// in that order, the sockaddrs with port 0 and the SA extension with only
// the SPI. Linux's sadb_msg_seq is x->km.seq, the sequence of the message
// that made the SA; an xfrm.SA keeps only the ACQUIRE sequence of an
// acquire SA, so that is sent (0 otherwise): key managers find the SA by
// its SPI and addresses (racoon's pk_recv_new_mapping does). It fails
// as Linux does (EINVAL) for an SA that is not ESP or not encapsulated,
// and for a new address of another family.
func NewMappingMsg(sa *xfrm.SA, newAddr netip.Addr, newPort uint16) (*Msg, error) {
	c := &sa.Config
	if c.Proto != xfrm.ProtoESP || c.Encap.Type == xfrm.EncapNone {
		return nil, errorf(syscall.EINVAL, "NEW_MAPPING for %v spi %#x, which is not UDP-encapsulated ESP", c.Proto, c.SPI)
	}
	if !newAddr.IsValid() || newAddr.Is4() != c.Src.Is4() || newAddr.Is4In6() {
		return nil, errorf(syscall.EINVAL, "NEW_MAPPING address %v is not of the SA's family", newAddr)
	}
	return &Msg{
		Type:      MsgXNATTNewMap,
		SAType:    SATypeESP,
		Seq:       sa.AcquireSeq(),
		SA:        &SA{SPI: c.SPI},
		Src:       hostAddr(c.Src, 0),
		NATTSport: &NATTPort{Port: c.Encap.SPort},
		Dst:       hostAddr(newAddr, 0),
		NATTDport: &NATTPort{Port: newPort},
		Order:     []uint16{ExtSA, ExtAddressSrc, ExtXNATTSport, ExtAddressDst, ExtXNATTDport},
	}, nil
}
