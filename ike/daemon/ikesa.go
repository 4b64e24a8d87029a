package daemon

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

type saState uint8

const (
	stateConnecting saState = iota
	stateEstablished
	stateDeleting
)

func (s saState) String() string {
	switch s {
	case stateConnecting:
		return "CONNECTING"
	case stateEstablished:
		return "ESTABLISHED"
	}
	return "DELETING"
}

// ikeSA is one IKE SA and the goroutine that drives it: first the
// initiator's or responder's IKE_SA_INIT and IKE_AUTH (exchange.Initiate
// or Serve over this value as their Transport), then its Session, fed
// with every message for the SA, a tick, and commands.
type ikeSA struct {
	d     *Daemon
	conn  *connState
	child int
	// initiator: this side started the IKE SA (IKE_SA_INIT); it runs
	// Initiate rather than Serve. The role in the current IKE SA, which
	// a rekey may change, is ikeInitiator.
	initiator bool
	xcfg      exchange.Config
	halfKey   *halfKey

	in  chan inMsg
	cmd chan func(now time.Time)
	// up is closed once the IKE SA is established or has failed
	// (failErr says which).
	up      chan struct{}
	upOnce  sync.Once
	failErr error

	ctx    context.Context
	cancel context.CancelFunc

	mu         sync.Mutex // guards what List and the daemon read
	state      saState
	spii, spir uint64
	// ikeInitiator: this side is the initiator of the current IKE SA:
	// the original initiator until a rekey, then the side that
	// initiated the last rekey (RFC 7296 §2.18).
	ikeInitiator bool
	local        netip.AddrPort // our IKE address, port 500
	remote       netip.AddrPort // the peer's, port 500 (or configured)
	remoteNATT   netip.AddrPort // the peer's on port 4500, as last seen
	// on4500: IKE moved to port 4500, by us (a NAT detected) or by the
	// peer (charon floats IKE_AUTH there even without a NAT). RFC 7296
	// §2.23: once there, the IKE SA stays there.
	on4500 bool
	// encap: the CHILD SAs are UDP-encapsulated (RFC 3948), because
	// IKE_SA_INIT detected a NAT or one side forced it (swanctl encap);
	// not merely because IKE is on port 4500.
	encap       bool
	localNAT    bool // this side is behind a NAT (send keepalives)
	established time.Time
	children    []*childSA
	localID     string
	remoteID    string

	resp *exchange.Responder
	sess Session
	// sessDone: the session cannot go on (a delete could not even be
	// sent); the loop ends after the current command.
	sessDone bool
	// creating holds the children a CREATE_CHILD_SA is under way for
	// (the SA's goroutine only).
	creating map[string]bool
}

func (d *Daemon) newSA(cs *connState, ci int, initiator bool, local, remote netip.AddrPort, xcfg exchange.Config) *ikeSA {
	ctx, cancel := context.WithCancel(d.ctx)
	sa := &ikeSA{d: d, conn: cs, child: ci, initiator: initiator, ikeInitiator: initiator, xcfg: xcfg,
		in: make(chan inMsg, 32), cmd: make(chan func(time.Time), 8), up: make(chan struct{}),
		ctx: ctx, cancel: cancel, local: local, remote: remote,
		remoteNATT: netip.AddrPortFrom(remote.Addr(), NATTPort),
		localID:    idString(xcfg.LocalID), remoteID: idString(xcfg.RemoteID)}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		cancel()
		return nil
	}
	d.sas[sa] = struct{}{}
	// The goroutine that will drive sa counts from here, under the lock
	// Close takes before it waits.
	d.wg.Add(1)
	return sa
}

func (sa *ikeSA) getState() saState {
	sa.mu.Lock()
	defer sa.mu.Unlock()
	return sa.state
}

func (sa *ikeSA) setState(s saState) {
	sa.mu.Lock()
	sa.state = s
	sa.mu.Unlock()
}

// initiatorSPI returns SPIi. Lock order: Daemon.mu, then ikeSA.mu.
func (sa *ikeSA) initiatorSPI() uint64 {
	sa.mu.Lock()
	defer sa.mu.Unlock()
	return sa.spii
}

func (sa *ikeSA) childCount() int {
	sa.mu.Lock()
	defer sa.mu.Unlock()
	return len(sa.children)
}

// deliver queues a received message; a full queue drops it (the peer
// retransmits).
func (sa *ikeSA) deliver(m inMsg) {
	select {
	case sa.in <- m:
	default:
		sa.d.Stats.InDropped.Add(1)
	}
}

// log returns the SA's logger.
func (sa *ikeSA) logger() *logAttrs {
	sa.mu.Lock()
	defer sa.mu.Unlock()
	return &logAttrs{conn: sa.conn.c.Name, spii: sa.spii, spir: sa.spir, remote: sa.remote}
}

type logAttrs struct {
	conn       string
	spii, spir uint64
	remote     netip.AddrPort
}

func (l *logAttrs) args(kv ...any) []any {
	return append([]any{"conn", l.conn, "spi_i", fmt.Sprintf("%016x", l.spii), "spi_r", fmt.Sprintf("%016x", l.spir), "peer", l.remote.String()}, kv...)
}

// Send implements exchange.Transport for IKE_SA_INIT and IKE_AUTH: from
// our port 500 to the peer's, or on port 4500 once the exchange (natt)
// or the peer moved there.
func (sa *ikeSA) Send(msg []byte, natt bool) error {
	sa.noteSPIs(msg)
	return sa.send(msg, natt)
}

// send sends msg on port 4500 if natt or if IKE is there already.
func (sa *ikeSA) send(msg []byte, natt bool) error {
	sa.mu.Lock()
	if natt {
		sa.on4500 = true
	}
	la, dst := sa.local, sa.remote
	if sa.on4500 {
		la, dst = netip.AddrPortFrom(sa.local.Addr(), NATTPort), sa.remoteNATT
	}
	sa.mu.Unlock()
	return sa.d.sendIKE(la, dst, msg)
}

// Recv implements exchange.Transport.
func (sa *ikeSA) Recv(ctx context.Context) ([]byte, bool, error) {
	select {
	case m := <-sa.in:
		sa.received(m)
		return m.b, m.natt, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// received follows the peer's NAT mapping on port 4500 (RFC 7296 §2.23:
// the address of the last authenticated message wins; here, the last
// message, as the exchanges in progress authenticate what follows),
// notes that IKE is on port 4500 once the peer's messages come there
// (§2.23: it stays there; our answers and requests follow), and notes
// whether this side is behind a NAT from the IKE_SA_INIT NAT-D.
func (sa *ikeSA) received(m inMsg) {
	sa.mu.Lock()
	if m.natt && m.from.Addr() == sa.remote.Addr() {
		sa.remoteNATT = m.from
		sa.on4500 = true
	}
	sa.mu.Unlock()
	h, err := message.DecodeHeader(m.b)
	if err != nil || h.Exchange != message.IKE_SA_INIT {
		return
	}
	if (sa.initiator && h.IsResponse() && h.SPIr != 0) || (!sa.initiator && !h.IsResponse()) {
		msg, err := message.Decode(m.b)
		if err != nil {
			return
		}
		spir := h.SPIr
		if !sa.initiator {
			spir = 0 // the request's hashes were made before SPIr existed
		}
		mine := ikecrypto.NATDetectionHash(h.SPIi, spir, sa.local.Addr(), sa.local.Port())
		for _, p := range msg.Payloads {
			if n, ok := p.(*message.Notify); ok && n.NotifyType == message.NAT_DETECTION_DESTINATION_IP {
				sa.mu.Lock()
				sa.localNAT = subtle.ConstantTimeCompare(n.Data, mine[:]) != 1
				sa.mu.Unlock()
			}
		}
	}
}

// noteSPIs indexes the IKE SA by our SPI once a message of IKE_SA_INIT
// or IKE_AUTH we send shows it. Established, the SPIs change only with a
// rekey (rekeyed): messages of the replaced IKE SA (its Delete, a late
// IKE_AUTH retransmission) carry the old ones.
func (sa *ikeSA) noteSPIs(msg []byte) {
	h, err := message.DecodeHeader(msg)
	if err != nil {
		return
	}
	sa.mu.Lock()
	if sa.state != stateConnecting {
		sa.mu.Unlock()
		return
	}
	if h.SPIi != 0 {
		sa.spii = h.SPIi
	}
	if h.SPIr != 0 {
		sa.spir = h.SPIr
	}
	our := sa.spii
	if !sa.initiator {
		our = sa.spir
	}
	sa.mu.Unlock()
	if our == 0 {
		return
	}
	d := sa.d
	d.mu.Lock()
	if d.bySPI[our] == nil {
		d.bySPI[our] = sa
	}
	d.mu.Unlock()
}

func (sa *ikeSA) markUp(err error) {
	sa.upOnce.Do(func() {
		sa.failErr = err
		close(sa.up)
	})
}

// runInitiator runs IKE_SA_INIT and IKE_AUTH as initiator, then the
// established IKE SA.
func (sa *ikeSA) runInitiator() {
	defer sa.d.wg.Done()
	defer sa.finish()
	start := time.Now()
	res, err := exchange.Initiate(sa.ctx, sa.xcfg, sa, sa.d.opts.Retransmit)
	if err != nil {
		sa.failed(err, time.Since(start))
		return
	}
	sa.run(res, time.Since(start), nil, false)
}

// runResponder answers IKE_SA_INIT and IKE_AUTH, then runs the
// established IKE SA. A half-open SA lives at most HalfOpenTimeout.
func (sa *ikeSA) runResponder(r *exchange.Responder) {
	defer sa.d.wg.Done()
	defer sa.finish()
	sa.resp = r
	start := time.Now()
	ctx, cancel := context.WithTimeout(sa.ctx, sa.d.opts.HalfOpenTimeout)
	res, last, lastNATT, err := exchange.ServeHeld(ctx, r, sa)
	cancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: half-open IKE SA expired", exchange.ErrTimeout)
		}
		sa.failed(err, time.Since(start))
		return
	}
	d := sa.d
	d.mu.Lock()
	if sa.halfKey != nil && d.halfOpen[*sa.halfKey] == sa {
		delete(d.halfOpen, *sa.halfKey)
	}
	sa.halfKey = nil
	d.mu.Unlock()
	sa.run(res, time.Since(start), last, lastNATT)
}

func (sa *ikeSA) failed(err error, took time.Duration) {
	reason := failReason(err)
	if strings.Contains(err.Error(), "AUTH does not verify") || strings.Contains(err.Error(), "unexpected identity") {
		reason = "auth"
	}
	if sa.ctx.Err() != nil && !errors.Is(err, exchange.ErrTimeout) {
		sa.markUp(err)
		return // terminated or closed: not a failure
	}
	sa.d.Stats.fail(reason)
	sa.d.log.Warn("ike failed", sa.logger().args("role", role(sa.initiator), "reason", reason, "err", err.Error(), "took", took.String())...)
	sa.markUp(err)
}

func role(initiator bool) string {
	if initiator {
		return "initiator"
	}
	return "responder"
}

// finish removes what the IKE SA still holds.
func (sa *ikeSA) finish() {
	sa.markUp(errors.New("IKE SA gone"))
	sa.setState(stateDeleting)
	sa.removeChildren()
	sa.d.removeSA(sa)
	sa.cancel()
}

// run is the established IKE SA's loop.
// As responder, last is the IKE_AUTH response (exchange.ServeHeld): it
// goes once the CHILD SA is installed, on the port the request came on
// (lastNATT), so that the initiator's first packets find our inbound SA
// and our own traffic to it finds the policies.
func (sa *ikeSA) run(res *exchange.Result, took time.Duration, last [][]byte, lastNATT bool) {
	d := sa.d
	now := time.Now()
	sa.mu.Lock()
	sa.spii, sa.spir = res.SPIi, res.SPIr
	// A NAT (or encap = yes) puts IKE on 4500 and encapsulates ESP; IKE
	// may be on 4500 without it (the peer floated), which stays so.
	sa.encap = res.NATT
	sa.on4500 = sa.on4500 || res.NATT
	sa.state = stateEstablished
	sa.established = now
	sa.mu.Unlock()
	if d.opts.KeyLog != nil {
		if line, err := KeyLogLine(&res.IKE, res); err == nil {
			d.opts.KeyLog(line)
		}
	}
	sess, err := newSession(sa, res, now)
	if err != nil {
		sa.failed(err, took)
		return
	}
	sa.sess = sess
	d.Stats.IKEEstablished.Add(1)
	sa.replaceDuplicates()
	d.log.Info("ike established", sa.logger().args("role", role(sa.initiator), "natt", res.NATT, "local_nat", sa.localNAT,
		"local_id", sa.localID, "remote_id", sa.remoteID, "took", took.String())...)
	ch, err := sa.installChild(sa.conn.c.Children[sa.child], sa.conn.reqids[sa.child], res.In, res.Out, res.NATT, res.LocalTS, res.RemoteTS)
	wipeSA(&res.In)
	wipeSA(&res.Out)
	for _, b := range last {
		if serr := sa.Send(b, lastNATT); serr != nil {
			d.log.Debug("ike send", sa.logger().args("err", serr.Error())...)
		}
	}
	if err != nil {
		d.Stats.fail("install")
		d.log.Warn("child install failed", sa.logger().args("child", sa.conn.c.Children[sa.child].Name, "err", err.Error())...)
		// The peer has the CHILD SA: tell it the IKE SA is gone.
		out, _ := sess.Delete(now)
		sa.sendAll(out)
	} else {
		sess.AddChild(ch.inSPI, ch.outSPI)
	}
	sa.markUp(nil)
	tick := time.NewTicker(d.opts.Tick)
	defer tick.Stop()
	for {
		select {
		case <-sa.ctx.Done():
			return
		case m := <-sa.in:
			sa.received(m)
			if sa.retransmittedAuth(m) {
				continue
			}
			out, evs, err := sess.Handle(m.b, time.Now())
			if err != nil {
				d.Stats.InDropped.Add(1)
				d.log.Debug("ike message dropped", sa.logger().args("err", err.Error())...)
			}
			// The SAs first, then the answer (as charon and Linux's
			// key managers do): the initiator of a CREATE_CHILD_SA
			// sends on its new outbound SA as soon as our response
			// arrives, and our new inbound SA must be there by then.
			ended := sa.apply(evs)
			sa.sendAll(out)
			if ended {
				return
			}
		case now := <-tick.C:
			out, evs := sess.Tick(now)
			ended := sa.apply(evs)
			sa.sendAll(out)
			if ended {
				return
			}
		case f := <-sa.cmd:
			f(time.Now())
			if sa.getState() == stateDeleting && sa.sessDone {
				return
			}
		}
	}
}

// createChild asks the session for another CHILD SA of configured child
// ci (CREATE_CHILD_SA), once per child at a time; it reports whether the
// session took the request.
func (sa *ikeSA) createChild(ci int, why string) bool {
	name := sa.conn.c.Children[ci].Name
	res := make(chan bool, 1)
	sa.do(func(now time.Time) {
		if sa.sess == nil {
			res <- false
			return
		}
		if sa.creating == nil {
			sa.creating = map[string]bool{}
		}
		for _, c := range sa.children {
			if c.name == name {
				res <- true // up already
				return
			}
		}
		if sa.creating[name] {
			res <- true
			return
		}
		out, err := sa.sess.CreateChild(name, now)
		if err != nil {
			res <- false
			return
		}
		sa.creating[name] = true
		sa.d.log.Info("child create", sa.logger().args("child", name, "trigger", why)...)
		sa.sendAll(out)
		res <- true
	})
	select {
	case ok := <-res:
		return ok
	case <-sa.ctx.Done():
		return false
	}
}

// childIndex returns the index of the configured child named name, or
// -1.
func (sa *ikeSA) childIndex(name string) int {
	for i, ch := range sa.conn.c.Children {
		if ch.Name == name {
			return i
		}
	}
	return -1
}

// rekeyGrace is how long the inbound SA of a rekeyed CHILD SA stays after
// the Delete exchange of the old pair: packets the peer sealed with it
// before it switched are still on their way.
const rekeyGrace = 2 * time.Second

// rekeyChild installs the successor of a CHILD SA (make-before-break: new
// inbound, new outbound, which takes over outbound at once), and retires
// the old pair.
func (sa *ikeSA) rekeyChild(ev SessionEvent) {
	d := sa.d
	sa.mu.Lock()
	var old *childSA
	for _, c := range sa.children {
		if c.inSPI == ev.OldInSPI {
			old = c
		}
	}
	encap := sa.encap
	sa.mu.Unlock()
	if old == nil {
		wipeSA(&ev.In)
		wipeSA(&ev.Out)
		d.log.Warn("rekey of an unknown CHILD SA", sa.logger().args("spi_in", fmt.Sprintf("0x%08x", ev.OldInSPI))...)
		return
	}
	lts, rts := ev.LocalTS, ev.RemoteTS
	if len(lts) == 0 || len(rts) == 0 {
		lts, rts = old.localTS, old.remoteTS
	}
	c, err := sa.installChild(old.cfg, old.reqid, ev.In, ev.Out, encap, lts, rts)
	if err != nil {
		d.Stats.fail("install")
		d.log.Warn("rekeyed child install failed", sa.logger().args("child", old.name, "err", err.Error())...)
		return
	}
	d.Stats.ChildRekeys.Add(1)
	d.log.Info("child rekeyed", sa.logger().args("child", old.name, "old_spi_in", fmt.Sprintf("0x%08x", old.inSPI),
		"spi_in", fmt.Sprintf("0x%08x", c.inSPI), "spi_out", fmt.Sprintf("0x%08x", c.outSPI))...)
	if c.outSPI == 0 {
		// The outbound SA follows (ChildOutbound); the old one stays
		// in use until then.
		c.predecessor = old
		return
	}
	sa.sess.AddChild(c.inSPI, c.outSPI)
	sa.retire(old)
}

// retire removes a rekeyed CHILD SA: its outbound SA at once (the new
// one has taken over), its inbound SA rekeyGrace after the Delete
// exchange of the old pair is done (childDeleted). Not on a timer from
// the rekey: the peer keeps sending on the old pair until that Delete
// reaches it (as the rekey's responder it holds its new outbound SA back
// until then), and a Delete held up by retransmissions or a loaded peer
// would otherwise find the old inbound SA gone and its packets dropped
// (XfrmInNoStates). strongSwan does the same (its inbound SA goes
// delete_rekeyed_delay after the delete).
func (sa *ikeSA) retire(old *childSA) {
	sa.mu.Lock()
	old.retiring = true
	deleted := old.deleted
	sa.mu.Unlock()
	sa.d.eng.SAD.Delete(old.outDst, xfrm.ProtoESP, old.outSPI)
	if deleted {
		sa.removeLater(old)
	}
}

// removeLater removes the inbound SA of a retired CHILD SA rekeyGrace
// from now: packets the peer sealed with it before it switched are still
// on their way.
func (sa *ikeSA) removeLater(old *childSA) {
	time.AfterFunc(rekeyGrace, func() { sa.do(func(time.Time) { sa.removeChild(old.inSPI) }) })
}

// childDeleted removes a CHILD SA the session reports deleted, except a
// rekeyed one: a retired one goes rekeyGrace later (retire), and one
// whose successor still waits for its outbound SA stays in use until
// that is in, then retires.
func (sa *ikeSA) childDeleted(inSPI uint32) {
	sa.mu.Lock()
	var c *childSA
	waiting := false
	for _, x := range sa.children {
		if x.inSPI == inSPI {
			c = x
		}
	}
	for _, x := range sa.children {
		if c != nil && x.predecessor == c {
			waiting = true
		}
	}
	retiring := c != nil && c.retiring
	if c != nil {
		c.deleted = true
	}
	sa.mu.Unlock()
	switch {
	case retiring:
		sa.removeLater(c)
	case waiting:
	default:
		sa.removeChild(inSPI)
	}
}

// outbound installs the held-back outbound SA of a rekeyed CHILD SA
// (ChildOutbound) and retires its predecessor.
func (sa *ikeSA) outbound(ev SessionEvent) {
	d := sa.d
	defer wipeSA(&ev.Out)
	c := sa.childBySPI(ev.OldInSPI, ev.Out.Src)
	if c == nil || c.outSPI != 0 {
		d.log.Warn("outbound SA for no CHILD SA waiting for one", sa.logger().args("spi_in", fmt.Sprintf("0x%08x", ev.OldInSPI))...)
		return
	}
	out := ev.Out
	out.ReqID = c.reqid
	out.Soft, out.Hard = lifetimes(c.cfg)
	if c.encap {
		sa.mu.Lock()
		out.Encap.DPort = sa.remoteNATT.Port()
		if sa.localNAT && d.opts.NATKeepalive > 0 {
			out.Encap.Keepalive = d.opts.NATKeepalive
		}
		sa.mu.Unlock()
	}
	s, err := d.eng.AddSA(out)
	if err != nil {
		d.Stats.fail("install")
		d.log.Warn("outbound SA install failed", sa.logger().args("child", c.name, "err", err.Error())...)
		return
	}
	sa.mu.Lock()
	c.outSA, c.outSPI, c.outDst = s, out.SPI, out.Dst
	old := c.predecessor
	c.predecessor = nil
	sa.mu.Unlock()
	sa.sess.AddChild(c.inSPI, c.outSPI)
	if old != nil {
		sa.retire(old)
	}
}

// rekeyed moves the IKE SA to its successor (the session holds the new
// keys): its SPIs, and its role, the rekey's initiator being the new IKE
// SA's initiator (RFC 7296 §2.18). The daemon's index gets our SPI of
// the new SA (dispatch looks up ours only); the old one stays, as
// messages of the old IKE SA (its Delete) still come until it is gone
// and the session tells them apart; removeSA drops them all at the end.
func (sa *ikeSA) rekeyed(spii, spir uint64, initiator bool, now time.Time) {
	d := sa.d
	sa.mu.Lock()
	oldI, oldR := sa.spii, sa.spir
	sa.spii, sa.spir, sa.ikeInitiator = spii, spir, initiator
	sa.established = now
	sa.mu.Unlock()
	our := spir
	if initiator {
		our = spii
	}
	d.mu.Lock()
	d.bySPI[our] = sa
	d.mu.Unlock()
	d.Stats.IKERekeys.Add(1)
	d.log.Info("ike rekeyed", sa.logger().args("role", role(initiator), "old_spi_i", fmt.Sprintf("%016x", oldI), "old_spi_r", fmt.Sprintf("%016x", oldR))...)
}

// replaceDuplicates removes the older IKE SAs of the same connection
// with the same peer when this one was initiated by the peer: our
// initiators send INITIAL_CONTACT, and a peer that starts over (restarted,
// or its trap fired again) has lost the old ones (swanctl's unique = no
// and replace). They go without a Delete: the peer no longer knows them.
func (sa *ikeSA) replaceDuplicates() {
	u := sa.conn.c.Unique
	if sa.initiator || (u != config.UniqueNo && u != config.UniqueReplace) {
		return
	}
	d := sa.d
	d.mu.Lock()
	var old []*ikeSA
	for o := range d.sas {
		if o != sa && o.conn == sa.conn && o.remote.Addr() == sa.remote.Addr() && o.getState() == stateEstablished {
			old = append(old, o)
		}
	}
	d.mu.Unlock()
	for _, o := range old {
		d.log.Info("ike replaced", o.logger().args("by_spi_i", fmt.Sprintf("%016x", sa.initiatorSPI()))...)
		o.cancel()
	}
}

// retransmittedAuth answers a repeated IKE_AUTH request with the
// Responder's saved response (§2.1: our response may have been lost).
func (sa *ikeSA) retransmittedAuth(m inMsg) bool {
	if sa.resp == nil {
		return false
	}
	h, err := message.DecodeHeader(m.b)
	if err != nil || h.Exchange != message.IKE_AUTH || h.IsResponse() || h.MessageID != 1 {
		return false
	}
	resp, _, _ := sa.resp.Handle(m.b)
	for _, b := range resp {
		sa.Send(b, m.natt)
	}
	return true
}

// sendAll sends what the established IKE SA's session returned, on the
// port IKE is on.
func (sa *ikeSA) sendAll(out [][]byte) {
	for _, b := range out {
		if err := sa.send(b, false); err != nil {
			sa.d.log.Debug("ike send", sa.logger().args("err", err.Error())...)
		}
	}
}

// apply carries out session events; it reports whether the IKE SA ended.
func (sa *ikeSA) apply(evs []SessionEvent) bool {
	d := sa.d
	for _, ev := range evs {
		switch ev.Kind {
		case ChildDeleted:
			sa.childDeleted(ev.OldInSPI)
		case ChildAdded:
			ci := sa.childIndex(ev.Child)
			if ci < 0 {
				d.Stats.fail("config")
				d.log.Warn("child of no configuration", sa.logger().args("child", ev.Child)...)
				continue
			}
			sa.mu.Lock()
			encap := sa.encap
			sa.mu.Unlock()
			c, err := sa.installChild(sa.conn.c.Children[ci], sa.conn.reqids[ci], ev.In, ev.Out, encap, ev.LocalTS, ev.RemoteTS)
			if err != nil {
				d.Stats.fail("install")
				d.log.Warn("child install failed", sa.logger().args("child", ev.Child, "err", err.Error())...)
				continue
			}
			sa.sess.AddChild(c.inSPI, c.outSPI)
			delete(sa.creating, ev.Child)
		case ChildRekeyed:
			sa.rekeyChild(ev)
		case ChildOutbound:
			sa.outbound(ev)
		case IKERekeyed:
			sa.rekeyed(ev.SPIi, ev.SPIr, ev.Initiator, time.Now())
			if d.opts.KeyLog != nil && ev.KeyLog != "" {
				d.opts.KeyLog(ev.KeyLog)
			}
		case IKEDeleted:
			d.Stats.IKEDeleted.Add(1)
			d.log.Info("ike deleted", sa.logger().args()...)
			sa.setState(stateDeleting)
			if ev.ByPeer {
				sa.afterDown(false)
			}
			return true
		case Dead:
			d.Stats.fail("dead")
			d.log.Warn("ike peer dead", sa.logger().args()...)
			sa.setState(stateDeleting)
			sa.afterDown(true)
			return true
		}
	}
	return false
}

// afterDown restarts a connection whose IKE SA the peer deleted, or
// which died, when its configuration says so (close_action or dpd_action
// restart); trap policies stay in place by themselves. An IKE SA this
// side deleted (terminate, its hard lifetime) is not restarted, as in
// charon.
func (sa *ikeSA) afterDown(dead bool) {
	ch := sa.conn.c.Children[sa.child]
	act := ch.CloseAction
	if dead {
		act = ch.DPDAction
	}
	if act == config.ActionRestart {
		go func() {
			time.Sleep(time.Second)
			sa.d.initiate(sa.conn, sa.child, "restart")
		}()
	}
}

// terminate deletes the IKE SA: an INFORMATIONAL Delete when it is
// established (the loop ends when the peer answers or the retransmissions
// give up), at once otherwise. done, if not nil, is closed when it is gone.
func (sa *ikeSA) terminate(done chan struct{}) {
	if done != nil {
		go func() {
			<-sa.ctx.Done()
			close(done)
		}()
	}
	if sa.getState() != stateEstablished {
		sa.cancel()
		return
	}
	select {
	case sa.cmd <- func(now time.Time) {
		out, err := sa.sess.Delete(now)
		sa.setState(stateDeleting)
		if err != nil {
			sa.sessDone = true
			return
		}
		sa.sendAll(out)
	}:
	default:
		sa.cancel()
	}
}

// expired handles a CHILD SA's lifetime: soft asks the session to rekey
// (make-before-break once CREATE_CHILD_SA lands); hard means the engine
// removed it, so the CHILD SA is deleted with the peer, and the IKE SA
// with it when the session cannot rekey (trap or restart brings it back).
func (sa *ikeSA) expired(spi uint32, dst netip.Addr, hard bool) {
	sa.do(func(now time.Time) {
		ch := sa.childBySPI(spi, dst)
		if ch == nil || sa.sess == nil {
			return
		}
		if !hard {
			out, err := sa.sess.RekeyChild(ch.inSPI, now)
			if err == nil {
				sa.sendAll(out)
				return
			}
			sa.d.log.Info("child rekey not possible", sa.logger().args("child", ch.name, "err", err.Error())...)
			return
		}
		out, err := sa.sess.DeleteChild(ch.inSPI, now)
		if err == nil {
			sa.sendAll(out)
		}
		sa.removeChild(ch.inSPI)
		if sa.childCount() == 0 {
			out, err := sa.sess.Delete(now)
			sa.setState(stateDeleting)
			if err == nil {
				sa.sendAll(out)
			}
		}
	})
}

// do runs f on the IKE SA's goroutine, unless the SA is gone.
func (sa *ikeSA) do(f func(now time.Time)) {
	select {
	case sa.cmd <- f:
	case <-sa.ctx.Done():
	}
}
