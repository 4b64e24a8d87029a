package daemon

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// childSA is an installed CHILD SA pair and the policies it holds.
type childSA struct {
	name          string
	cfg           *config.Child
	reqid         uint32
	mode          xfrm.Mode
	inSPI, outSPI uint32
	inDst, outDst netip.Addr
	encap         bool // UDP-encapsulated (RFC 3948)
	localTS       []message.TrafficSelector
	remoteTS      []message.TrafficSelector
	pols          []polKey
	installed     time.Time
	inSA, outSA   *xfrm.SA
	// predecessor is the CHILD SA this one rekeyed, kept in use until
	// this one's outbound SA is in (ChildOutbound).
	predecessor *childSA
	// retiring: replaced by a rekey; its inbound SA goes rekeyGrace
	// after the Delete exchange of it (deleted).
	retiring bool
	// deleted: the session reported the pair deleted (ChildDeleted).
	deleted bool
}

// polKey names an SPD entry the daemon holds: direction and selector.
type polKey struct {
	dir xfrm.Dir
	sel xfrm.Selector
}

// polRef counts the holders of one SPD entry: a trap and the CHILD SAs
// negotiated under it share the policy.
type polRef struct {
	id uint32
	n  int
}

// Priorities (lower wins): the ICMPv6 neighbour discovery bypass above
// everything the daemon protects, and more specific selectors before
// less specific ones, as strongSwan orders its policies.
const (
	prioNDP   = 100
	prioChild = 10000
)

func priority(sel xfrm.Selector) uint32 {
	p := prioChild - uint32(sel.Src.Bits()+sel.Dst.Bits())
	if sel.Proto != 0 {
		p--
	}
	if !sel.SrcPorts.IsAny() || !sel.DstPorts.IsAny() {
		p--
	}
	return p
}

// childPolicies returns the policies of a CHILD SA between the selectors
// l (ours) and r (the peer's): out, in and, in tunnel mode, fwd (Linux
// checks forwarded traffic that came through a tunnel against fwd, and
// strongSwan installs it), all bound to reqid. src and dst are this
// side's and the peer's tunnel endpoints.
func childPolicies(l, r []message.TrafficSelector, mode xfrm.Mode, src, dst netip.Addr, reqid uint32) ([]*xfrm.Policy, error) {
	var out []*xfrm.Policy
	for _, lt := range l {
		for _, rt := range r {
			if (lt.TSType == message.TS_IPV4_ADDR_RANGE) != (rt.TSType == message.TS_IPV4_ADDR_RANGE) {
				continue // a pair of two families selects nothing
			}
			sel, err := tsSelector(lt, rt)
			if err != nil {
				return nil, err
			}
			rev := xfrm.Selector{Src: sel.Dst, Dst: sel.Src, Proto: sel.Proto, SrcPorts: sel.DstPorts, DstPorts: sel.SrcPorts}
			ot := xfrm.Template{Proto: xfrm.ProtoESP, Mode: mode, Level: xfrm.LevelRequire, ReqID: reqid}
			it := ot
			if mode == xfrm.ModeTunnel {
				ot.Src, ot.Dst = src, dst
				it.Src, it.Dst = dst, src
			}
			prio := priority(sel)
			out = append(out,
				&xfrm.Policy{Dir: xfrm.DirOut, Sel: sel, Priority: prio, Action: xfrm.ActionProtect, Templates: []xfrm.Template{ot}},
				&xfrm.Policy{Dir: xfrm.DirIn, Sel: rev, Priority: prio, Action: xfrm.ActionProtect, Templates: []xfrm.Template{it}})
			if mode == xfrm.ModeTunnel {
				out = append(out, &xfrm.Policy{Dir: xfrm.DirFwd, Sel: rev, Priority: prio, Action: xfrm.ActionProtect, Templates: []xfrm.Template{it}})
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no pair of traffic selectors of one family")
	}
	return out, nil
}

// holdPolicies adds the policies (or takes another reference to those
// already held) and returns their keys.
func (d *Daemon) holdPolicies(ps []*xfrm.Policy) ([]polKey, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var keys []polKey
	for _, p := range ps {
		if p.Sel.Src.Addr().Is6() && !d.ndp {
			if err := d.addNDPBypassLocked(); err != nil {
				d.releaseLocked(keys)
				return nil, err
			}
		}
		k := polKey{p.Dir, p.Sel}
		if r := d.pols[k]; r != nil {
			r.n++
			keys = append(keys, k)
			continue
		}
		id, err := d.eng.AddPolicy(p)
		if err != nil {
			d.releaseLocked(keys)
			return nil, fmt.Errorf("policy %v %v: %w", p.Dir, p.Sel, err)
		}
		d.pols[k] = &polRef{id: id, n: 1}
		keys = append(keys, k)
	}
	return keys, nil
}

func (d *Daemon) releasePolicies(keys []polKey) {
	d.mu.Lock()
	d.releaseLocked(keys)
	d.mu.Unlock()
}

func (d *Daemon) releaseLocked(keys []polKey) {
	for _, k := range keys {
		r := d.pols[k]
		if r == nil {
			continue
		}
		if r.n--; r.n <= 0 {
			d.eng.SPD.DeleteByID(r.id)
			delete(d.pols, k)
		}
	}
}

// addNDPBypassLocked exempts IPv6 neighbour discovery (ICMPv6 types
// 133-137) from the daemon's policies: a policy covering the peer's
// address would otherwise need an SA before the neighbour is even
// resolved (RFC 4301 §4.4.1.1 leaves ICMP messages to local policy).
func (d *Daemon) addNDPBypassLocked() error {
	ndp := xfrm.Selector{Src: netip.MustParsePrefix("::/0"), Dst: netip.MustParsePrefix("::/0"), Proto: xfrm.ProtoICMPv6,
		SrcPorts: xfrm.PortRange{Lo: 133, Hi: 137, Specified: true}}
	for _, dir := range []xfrm.Dir{xfrm.DirOut, xfrm.DirIn, xfrm.DirFwd} {
		id, err := d.eng.AddPolicy(&xfrm.Policy{Dir: dir, Sel: ndp, Priority: prioNDP, Action: xfrm.ActionBypass})
		if err != nil {
			return fmt.Errorf("neighbour discovery bypass: %w", err)
		}
		d.pols[polKey{dir, ndp}] = &polRef{id: id, n: 1}
	}
	d.ndp = true
	return nil
}

// installTrap installs a start_action=trap child's policies between the
// connection's addresses: the first packet they catch raises an ACQUIRE
// (the engine drops it and its followers, counted, until an SA exists).
func (d *Daemon) installTrap(cs *connState, ci int) error {
	ch := cs.c.Children[ci]
	ra, ok := remoteAddr(cs.c)
	if !ok {
		return fmt.Errorf("connection %s has no single remote address", cs.c.Name)
	}
	la, ok := d.localAddrFor(cs.c, ra)
	if !ok {
		return fmt.Errorf("no local address toward %v", ra)
	}
	l, r := childTS(ch, la, ra)
	ps, err := childPolicies(l, r, ch.Mode, la, ra, cs.reqids[ci])
	if err != nil {
		return err
	}
	_, err = d.holdPolicies(ps) // held for the daemon's life
	if err == nil {
		d.log.Info("ike trap installed", "conn", cs.c.Name, "child", ch.Name, "reqid", cs.reqids[ci], "policies", len(ps))
	}
	return err
}

// jitter returns t less a random part of up to r (swanctl's rand_time),
// so that many SAs do not rekey at once; r = 0 is no jitter. A jitter of
// t or more is not applied (charon's would take the rekey anywhere down
// to 0, or wrap around): short test setups set life_time = 2 rekey_time,
// whose default rand_time is then rekey_time, and rely on rekeying at
// rekey_time.
func jitter(t, r time.Duration) time.Duration {
	if t <= 0 {
		return 0
	}
	if r > 0 && r < t {
		t -= time.Duration(rand.Int64N(int64(r) + 1))
	}
	return t
}

// jitterCount is jitter for rekey_bytes and rekey_packets (0: off).
func jitterCount(n, r uint64) uint64 {
	if r > 0 && r < n {
		n -= rand.Uint64N(r + 1)
	}
	return n
}

// lifetimes are a CHILD SA's xfrm limits as charon's child_cfg
// get_lifetime makes them: soft at rekey_* less a random part of up to
// rand_*, hard at life_*. The configuration has swanctl's defaults
// applied (ike/swanctl, vici's check_lifetimes), so a zero rand_* is an
// explicit "no jitter", not "use the default".
func lifetimes(ch *config.Child) (soft, hard xfrm.Lifetime) {
	if t := jitter(ch.RekeyTime, ch.RandTime); t > 0 {
		soft.AddSeconds = uint64((t + time.Second - 1) / time.Second)
	}
	if ch.LifeTime > 0 {
		hard.AddSeconds = uint64((ch.LifeTime + time.Second - 1) / time.Second)
	}
	soft.Bytes, hard.Bytes = jitterCount(ch.RekeyBytes, ch.RandBytes), ch.LifeBytes
	soft.Packets, hard.Packets = jitterCount(ch.RekeyPackets, ch.RandPackets), ch.LifePackets
	return soft, hard
}

// installChild installs a negotiated CHILD SA pair and its policies: the
// policies first (a protect policy without its SA drops: nothing goes in
// or out in clear meanwhile), then the inbound SA, then the outbound one.
// The keys in in and out are wiped.
// A newer outbound SA of the same reqid takes over the traffic at once
// (the SAD prefers the newest): installing a rekeyed pair before
// removing the old one is make-before-break.
func (sa *ikeSA) installChild(ch *config.Child, reqid uint32, in, out xfrm.SAConfig, encap bool, lts, rts []message.TrafficSelector) (*childSA, error) {
	d := sa.d
	defer wipeSA(&in)
	defer wipeSA(&out)
	in.ReqID, out.ReqID = reqid, reqid
	in.Soft, in.Hard = lifetimes(ch)
	out.Soft, out.Hard = in.Soft, in.Hard
	sa.mu.Lock()
	if encap {
		// The peer's port on 4500 as its messages come (a NAPT maps it),
		// not the 4500 the exchange assumes.
		p := sa.remoteNATT.Port()
		out.Encap.DPort, in.Encap.SPort = p, p
		if sa.localNAT && d.opts.NATKeepalive > 0 {
			out.Encap.Keepalive = d.opts.NATKeepalive
		}
	}
	sa.mu.Unlock()
	c := &childSA{name: ch.Name, cfg: ch, reqid: reqid, mode: ch.Mode, inSPI: in.SPI, outSPI: out.SPI,
		inDst: in.Dst, outDst: out.Dst, encap: encap, localTS: lts, remoteTS: rts, installed: time.Now()}
	// Policies first: until the SAs are in, what they cover is dropped
	// (and counted), never sent or accepted in clear. With the inbound SA
	// in before the policies, a packet it decrypted passed the (absent)
	// inbound check, and the reply went out in clear before the outbound
	// policy was there; the leak detector caught a SYN-ACK.
	// Tunnel endpoints: ours is the inbound SA's destination.
	ps, err := childPolicies(lts, rts, ch.Mode, in.Dst, in.Src, reqid)
	if err == nil {
		c.pols, err = d.holdPolicies(ps)
	}
	if err != nil {
		return nil, err
	}
	if c.inSA, err = d.eng.AddSA(in); err != nil {
		d.releasePolicies(c.pols)
		return nil, fmt.Errorf("inbound SA: %w", err)
	}
	if out.SPI != 0 {
		if c.outSA, err = d.eng.AddSA(out); err != nil {
			d.eng.SAD.Delete(in.Dst, xfrm.ProtoESP, in.SPI)
			d.releasePolicies(c.pols)
			return nil, fmt.Errorf("outbound SA: %w", err)
		}
	}
	sa.mu.Lock()
	sa.children = append(sa.children, c)
	sa.mu.Unlock()
	d.Stats.ChildInstalled.Add(1)
	d.log.Info("child installed", sa.logger().args("child", ch.Name, "mode", ch.Mode.String(), "reqid", reqid,
		"spi_in", fmt.Sprintf("0x%08x", c.inSPI), "spi_out", fmt.Sprintf("0x%08x", c.outSPI), "encap", encap,
		"local_ts", tsStrings(lts), "remote_ts", tsStrings(rts))...)
	return c, nil
}

func wipeSA(c *xfrm.SAConfig) {
	for _, a := range []*xfrm.Algorithm{&c.AEAD, &c.Enc, &c.Auth} {
		clear(a.Key)
	}
}

// removeChild deletes a CHILD SA's SAs and releases its policies (a trap
// keeps its own reference, so trapped policies stay).
func (sa *ikeSA) removeChild(inSPI uint32) {
	sa.mu.Lock()
	i := slices.IndexFunc(sa.children, func(c *childSA) bool { return c.inSPI == inSPI })
	if i < 0 {
		sa.mu.Unlock()
		return
	}
	c := sa.children[i]
	sa.children = slices.Delete(sa.children, i, i+1)
	sa.mu.Unlock()
	sa.uninstall(c)
}

func (sa *ikeSA) removeChildren() {
	sa.mu.Lock()
	list := sa.children
	sa.children = nil
	sa.mu.Unlock()
	for _, c := range list {
		sa.uninstall(c)
	}
}

// uninstall removes the SAs, then releases the policies (a trap's
// stay): the reverse of installChild, so that while the SAs go the
// policies still drop what they covered.
func (sa *ikeSA) uninstall(c *childSA) {
	d := sa.d
	if c.outSPI != 0 {
		d.eng.SAD.Delete(c.outDst, xfrm.ProtoESP, c.outSPI)
	}
	d.eng.SAD.Delete(c.inDst, xfrm.ProtoESP, c.inSPI)
	d.releasePolicies(c.pols)
	d.Stats.ChildDeleted.Add(1)
	d.log.Info("child removed", sa.logger().args("child", c.name, "spi_in", fmt.Sprintf("0x%08x", c.inSPI), "spi_out", fmt.Sprintf("0x%08x", c.outSPI))...)
}

func (sa *ikeSA) childBySPI(spi uint32, dst netip.Addr) *childSA {
	sa.mu.Lock()
	defer sa.mu.Unlock()
	for _, c := range sa.children {
		if (c.inSPI == spi && c.inDst == dst) || (c.outSPI == spi && c.outDst == dst) {
			return c
		}
	}
	return nil
}

// rekeyedLocked reports whether c was replaced by a rekey and only
// lingers: retiring, or the predecessor of a CHILD SA waiting for its
// outbound SA. sa.mu is held.
func (sa *ikeSA) rekeyedLocked(c *childSA) bool {
	if c.retiring {
		return true
	}
	for _, x := range sa.children {
		if x.predecessor == c {
			return true
		}
	}
	return false
}

// upCount is the number of CHILD SAs up: those not replaced by a rekey.
func (sa *ikeSA) upCount() int {
	sa.mu.Lock()
	defer sa.mu.Unlock()
	n := 0
	for _, c := range sa.children {
		if !sa.rekeyedLocked(c) {
			n++
		}
	}
	return n
}

func (sa *ikeSA) ownsSPI(spi uint32, dst netip.Addr) bool { return sa.childBySPI(spi, dst) != nil }

func tsStrings(ts []message.TrafficSelector) []string {
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		s := fmt.Sprintf("%v-%v", t.Start, t.End)
		if p, err := tsPrefix(t); err == nil {
			s = p.String()
		}
		if t.IPProto != 0 || t.StartPort != 0 || t.EndPort != 65535 {
			s += fmt.Sprintf("[%d/%d-%d]", t.IPProto, t.StartPort, t.EndPort)
		}
		out = append(out, s)
	}
	return out
}

// inboundPackets is the number of packets the IKE SA's inbound CHILD
// SAs have accepted (liveness: see ikesaSession.espSeen).
func (sa *ikeSA) inboundPackets() uint64 {
	sa.mu.Lock()
	defer sa.mu.Unlock()
	var n uint64
	for _, c := range sa.children {
		if c.inSA != nil {
			n += c.inSA.Counters.Packets.Load()
		}
	}
	return n
}
