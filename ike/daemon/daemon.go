// Package daemon is the IKEv2 key manager that runs inside an ipsecstack
// stack: UDP sockets on ports 500 and 4500 of the stack's own addresses
// (with the non-ESP marker on 4500, RFC 3948 §2.2), one goroutine per IKE
// SA driving ike/exchange's state machines, and the glue that installs
// each negotiated CHILD SA pair and its policies (out, in and, in tunnel
// mode, fwd, bound by a reqid) in the xfrm engine and removes them again.
//
// Connections come from ike/config: start_action none waits for a peer or
// Initiate, start initiates at once, trap installs the policies with their
// templates so that the first packet's ACQUIRE starts the initiator
// (packets meanwhile are dropped by the engine and counted, never sent in
// clear). Responders are found by address; half-open IKE SAs are keyed
// by the initiator's SPI and address, bounded, and above a threshold
// (strongSwan's 30) must return a cookie first (RFC 7296 §2.6).
//
// The IKE sockets carry socket policies that bypass the SPD (as
// strongSwan sets on its sockets), so a policy covering the peer's
// address does not swallow IKE itself.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// IKE ports (RFC 7296 §2, RFC 3948).
const (
	IKEPort  = 500
	NATTPort = exchange.NATTPort
)

// Defaults, strongSwan's where it has one.
const (
	DefaultCookieThreshold = 30 // charon.cookie_threshold
	DefaultHalfOpenMax     = 1024
	DefaultHalfOpenTimeout = 30 * time.Second // charon.half_open_timeout
	DefaultNATKeepalive    = 20 * time.Second // charon.keep_alive
	DefaultTick            = 250 * time.Millisecond
)

// Options configure a Daemon.
type Options struct {
	// Stack is the stack the daemon keys; its Engine gets the SAs.
	Stack *stack.Stack
	// Addrs are the stack's addresses the IKE sockets bind to.
	Addrs []netip.Addr
	// Config holds the connections and secrets.
	Config *config.Config
	// Log gets one structured line per exchange outcome and SA change;
	// keys never appear in it.
	Log *slog.Logger
	// KeyLog, when set, gets a Wireshark ikev2_decryption_table line per
	// IKE SA (KeyLogLine); it is the only place IKE keys leave the daemon.
	KeyLog func(line string)
	// Retransmit is the request retransmission schedule (zero: strongSwan's).
	Retransmit exchange.Retransmit
	// CookieThreshold is the number of half-open IKE SAs from which an
	// IKE_SA_INIT must carry a cookie (0: DefaultCookieThreshold).
	CookieThreshold int
	// HalfOpenMax bounds the half-open IKE SAs; beyond it requests are
	// dropped and counted (0: DefaultHalfOpenMax).
	HalfOpenMax int
	// HalfOpenTimeout is how long a responder waits for IKE_AUTH.
	HalfOpenTimeout time.Duration
	// NATKeepalive is the keepalive interval when this side is behind a
	// NAT (0: DefaultNATKeepalive; negative: off).
	NATKeepalive time.Duration
	// Tick is how often sessions' timers run (0: DefaultTick).
	Tick time.Duration
	// RekeyRetry is how long after a failed IKE or CHILD SA rekey it is
	// tried again (0: charon's RETRY_INTERVAL 15 s less up to RETRY_JITTER
	// 10 s at random, ike_sa.h).
	RekeyRetry time.Duration
}

// rekeyRetry is how long a failed rekey waits before it is tried again
// (Options.RekeyRetry).
func (d *Daemon) rekeyRetry() time.Duration {
	if d.opts.RekeyRetry > 0 {
		return d.opts.RekeyRetry
	}
	return time.Duration(15-rand.IntN(10)) * time.Second
}

// Daemon is a running IKE key manager. Safe for concurrent use.
type Daemon struct {
	opts    Options
	st      *stack.Stack
	eng     *xfrm.Engine
	log     *slog.Logger
	cookies *exchange.Cookies
	conns   []*connState

	// Stats are the daemon's counters (see Snapshot).
	Stats Stats

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	unsub  func()

	mu       sync.Mutex
	socks    map[netip.AddrPort]*gonet.UDPConn
	bySPI    map[uint64]*ikeSA
	halfOpen map[halfKey]*ikeSA
	sas      map[*ikeSA]struct{}
	pols     map[polKey]*polRef
	ndp      bool // the ICMPv6 neighbour discovery bypass is installed
	closed   bool
}

// connState is a configured connection and the reqids of its children.
type connState struct {
	c      *config.Connection
	reqids []uint32
}

type halfKey struct {
	spii uint64
	addr netip.Addr
}

// New checks the configuration and returns a daemon; Start runs it.
func New(opts Options) (*Daemon, error) {
	if opts.Stack == nil || opts.Config == nil {
		return nil, errors.New("daemon: Stack and Config are required")
	}
	if len(opts.Addrs) == 0 {
		return nil, errors.New("daemon: no local address to bind IKE to")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(discard{}, nil))
	}
	if opts.CookieThreshold <= 0 {
		opts.CookieThreshold = DefaultCookieThreshold
	}
	if opts.HalfOpenMax <= 0 {
		opts.HalfOpenMax = DefaultHalfOpenMax
	}
	if opts.HalfOpenTimeout <= 0 {
		opts.HalfOpenTimeout = DefaultHalfOpenTimeout
	}
	if opts.NATKeepalive == 0 {
		opts.NATKeepalive = DefaultNATKeepalive
	}
	if opts.Tick <= 0 {
		opts.Tick = DefaultTick
	}
	d := &Daemon{opts: opts, st: opts.Stack, eng: opts.Stack.Engine, log: opts.Log, cookies: exchange.NewCookies(),
		socks: map[netip.AddrPort]*gonet.UDPConn{}, bySPI: map[uint64]*ikeSA{}, halfOpen: map[halfKey]*ikeSA{},
		sas: map[*ikeSA]struct{}{}, pols: map[polKey]*polRef{}}
	d.Stats.init()
	used := map[uint32]bool{}
	for _, c := range opts.Config.Connections {
		for _, ch := range c.Children {
			if ch.ReqID != 0 {
				used[ch.ReqID] = true
			}
		}
	}
	next := uint32(1)
	for _, c := range opts.Config.Connections {
		cs := &connState{c: c}
		for _, ch := range c.Children {
			r := ch.ReqID
			if r == 0 {
				for used[next] {
					next++
				}
				r = next
				used[r] = true
			}
			cs.reqids = append(cs.reqids, r)
			// Check what can be checked before a peer shows up.
			if _, err := espSuiteOf(ch.Proposals); err != nil {
				return nil, fmt.Errorf("%s: child %s: %v", ch.Pos, ch.Name, err)
			}
		}
		if len(c.Children) == 0 {
			return nil, fmt.Errorf("%s: connection %s has no children", c.Pos, c.Name)
		}
		if _, err := ikeSuiteOf(c.Proposals); err != nil {
			return nil, fmt.Errorf("%s: connection %s: %v", c.Pos, c.Name, err)
		}
		d.conns = append(d.conns, cs)
	}
	return d, nil
}

// Start opens the IKE sockets, installs trap policies and initiates the
// connections with start_action start.
func (d *Daemon) Start(ctx context.Context) error {
	d.ctx, d.cancel = context.WithCancel(ctx)
	for _, a := range d.opts.Addrs {
		for _, port := range []uint16{IKEPort, NATTPort} {
			if err := d.listen(netip.AddrPortFrom(a.Unmap(), port)); err != nil {
				d.Close()
				return err
			}
		}
	}
	evs := make(chan xfrm.Event, 256)
	d.unsub = d.eng.Subscribe(func(ev xfrm.Event) {
		select {
		case evs <- ev:
		default:
			d.Stats.EventsDropped.Add(1)
		}
	})
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for {
			select {
			case <-d.ctx.Done():
				return
			case ev := <-evs:
				d.engineEvent(ev)
			}
		}
	}()
	for _, cs := range d.conns {
		for i, ch := range cs.c.Children {
			switch ch.StartAction {
			case config.StartTrap:
				if err := d.installTrap(cs, i); err != nil {
					d.Close()
					return fmt.Errorf("%s: child %s: trap policies: %w", ch.Pos, ch.Name, err)
				}
			case config.StartStart:
				if _, err := d.initiate(cs, i, "start"); err != nil {
					d.log.Warn("ike initiate", "conn", cs.c.Name, "child", ch.Name, "err", err)
				}
			}
		}
	}
	return nil
}

// Close deletes every IKE SA (telling the peers, briefly), removes the
// SAs and policies the daemon installed and closes its sockets.
func (d *Daemon) Close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	sas := make([]*ikeSA, 0, len(d.sas))
	for sa := range d.sas {
		sas = append(sas, sa)
	}
	d.mu.Unlock()
	for _, sa := range sas {
		sa.terminate(nil)
	}
	// Give the deletes a moment to reach the peers, then stop.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		d.mu.Lock()
		n := len(d.sas)
		d.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d.cancel != nil {
		d.cancel()
	}
	if d.unsub != nil {
		d.unsub()
	}
	d.mu.Lock()
	for k, c := range d.socks {
		c.Close()
		d.eng.ClearSocketPolicy(xfrm.SocketKey{Proto: xfrm.ProtoUDP, Local: k})
	}
	d.socks = map[netip.AddrPort]*gonet.UDPConn{}
	d.mu.Unlock()
	d.wg.Wait()
	d.mu.Lock()
	for k, r := range d.pols {
		d.eng.SPD.DeleteByID(r.id)
		delete(d.pols, k)
	}
	d.mu.Unlock()
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// listen opens one IKE socket on the stack and exempts it from the SPD.
func (d *Daemon) listen(la netip.AddrPort) error {
	fa := tcpip.FullAddress{Addr: tcpip.AddrFromSlice(la.Addr().AsSlice()), Port: la.Port()}
	c, err := gonet.DialUDP(d.st.Stack, &fa, nil, stack.Proto(la.Addr()))
	if err != nil {
		return fmt.Errorf("ike: udp socket on %v: %v", la, err)
	}
	k := xfrm.SocketKey{Proto: xfrm.ProtoUDP, Local: la}
	for _, dir := range []xfrm.Dir{xfrm.DirOut, xfrm.DirIn} {
		if err := d.eng.SetSocketPolicy(k, &xfrm.Policy{Dir: dir, Action: xfrm.ActionBypass}); err != nil {
			c.Close()
			return fmt.Errorf("ike: bypass policy for %v: %v", la, err)
		}
	}
	d.mu.Lock()
	d.socks[la] = c
	d.mu.Unlock()
	d.wg.Add(1)
	go d.read(la, c)
	return nil
}

// read receives on one socket until it is closed.
func (d *Daemon) read(la netip.AddrPort, c *gonet.UDPConn) {
	defer d.wg.Done()
	buf := make([]byte, 65536)
	natt := la.Port() == NATTPort
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && d.ctx.Err() == nil {
				continue
			}
			return
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		fa, _ := netip.AddrFromSlice(ua.IP)
		src := netip.AddrPortFrom(fa.Unmap(), uint16(ua.Port))
		b := buf[:n]
		if natt {
			// RFC 3948 §2.2: IKE after the four zero bytes; a keepalive
			// (0xFF) or ESP the SAD did not claim is not for us.
			if len(b) == 1 && b[0] == 0xff {
				d.Stats.InKeepalive.Add(1)
				continue
			}
			if len(b) < 4 || b[0]|b[1]|b[2]|b[3] != 0 {
				d.Stats.InNotIKE.Add(1)
				continue
			}
			b = b[4:]
		}
		d.dispatch(la, src, append([]byte(nil), b...), natt)
	}
}

// sendIKE sends one IKE message from la to dst, with the non-ESP marker
// on port 4500.
func (d *Daemon) sendIKE(la, dst netip.AddrPort, msg []byte) error {
	d.mu.Lock()
	c := d.socks[la]
	d.mu.Unlock()
	if c == nil {
		return fmt.Errorf("ike: no socket on %v", la)
	}
	b := msg
	if la.Port() == NATTPort {
		b = append(make([]byte, 4, 4+len(msg)), msg...)
	}
	_, err := c.WriteTo(b, net.UDPAddrFromAddrPort(dst))
	if err == nil {
		d.Stats.OutMessages.Add(1)
	}
	return err
}

type inMsg struct {
	b    []byte
	from netip.AddrPort
	natt bool
}

// dispatch routes a received IKE message to its IKE SA, or creates a
// responder for a new IKE_SA_INIT.
func (d *Daemon) dispatch(la, from netip.AddrPort, b []byte, natt bool) {
	d.Stats.InMessages.Add(1)
	h, err := message.DecodeHeader(b)
	if err != nil || int(h.Length) != len(b) {
		d.Stats.InMalformed.Add(1)
		return
	}
	m := inMsg{b: b, from: from, natt: natt}
	if h.Exchange == message.IKE_SA_INIT && !h.IsResponse() && h.SPIr == 0 {
		d.newRequest(la, from, m, h)
		return
	}
	our := h.SPIi
	if h.IsInitiator() {
		our = h.SPIr
	}
	d.mu.Lock()
	sa := d.bySPI[our]
	d.mu.Unlock()
	if sa == nil {
		d.Stats.InUnknownSPI.Add(1)
		return
	}
	sa.deliver(m)
}

// newRequest handles an IKE_SA_INIT request: a retransmission goes to its
// half-open SA; a new one passes the budget and, under load, the cookie
// check before a responder is made for it.
func (d *Daemon) newRequest(la, from netip.AddrPort, m inMsg, h message.Header) {
	key := halfKey{h.SPIi, from.Addr()}
	d.mu.Lock()
	if sa := d.halfOpen[key]; sa != nil {
		d.mu.Unlock()
		sa.deliver(m)
		return
	}
	// A late copy of the IKE_SA_INIT of an IKE SA that is past it is
	// not a new initiator (§2.1: its response was sent already).
	for sa := range d.sas {
		if !sa.initiator && sa.halfKey == nil && sa.initiatorSPI() == h.SPIi && sa.remote.Addr() == from.Addr() {
			d.mu.Unlock()
			d.Stats.InDropped.Add(1)
			return
		}
	}
	n := len(d.halfOpen)
	closed := d.closed
	max, threshold := d.opts.HalfOpenMax, d.opts.CookieThreshold
	d.mu.Unlock()
	if closed {
		return
	}
	if n >= max {
		d.Stats.HalfOpenRefused.Add(1)
		return
	}
	if n >= threshold {
		resp, ok := exchange.CheckCookie(d.cookies, m.b, from.Addr())
		if !ok {
			if resp != nil {
				d.Stats.CookiesSent.Add(1)
				d.sendIKE(la, from, resp)
			} else {
				d.Stats.InMalformed.Add(1)
			}
			return
		}
	}
	cs, ci := d.matchConn(la.Addr(), from.Addr())
	if cs == nil {
		d.Stats.NoConnection.Add(1)
		d.log.Info("ike: no connection for peer", "peer", from.String(), "local", la.String())
		return
	}
	xcfg, err := exchangeConfig(d.opts.Config, cs.c, cs.c.Children[ci], netip.AddrPortFrom(la.Addr(), IKEPort), from)
	if err != nil {
		d.Stats.fail("config")
		d.log.Warn("ike: connection unusable", "conn", cs.c.Name, "err", err)
		return
	}
	r, err := exchange.NewResponder(xcfg)
	if err != nil {
		d.Stats.fail("config")
		d.log.Warn("ike: connection unusable", "conn", cs.c.Name, "err", err)
		return
	}
	sa := d.newSA(cs, ci, false, netip.AddrPortFrom(la.Addr(), IKEPort), from, xcfg)
	if sa == nil {
		return
	}
	sa.spii = h.SPIi
	d.mu.Lock()
	d.halfOpen[key] = sa
	sa.halfKey = &key
	d.mu.Unlock()
	sa.deliver(m)
	go sa.runResponder(r)
}

// SetHalfOpenLimits changes the cookie threshold and the half-open
// budget (Options.CookieThreshold, HalfOpenMax) of a running daemon.
func (d *Daemon) SetHalfOpenLimits(cookieThreshold, max int) {
	d.mu.Lock()
	d.opts.CookieThreshold, d.opts.HalfOpenMax = cookieThreshold, max
	d.mu.Unlock()
}

// matchConn finds the connection a peer at remote reaching local belongs
// to: the first whose local and remote addresses admit them. Without
// identities (they come in IKE_AUTH) the first child is the one the
// responder negotiates.
func (d *Daemon) matchConn(local, remote netip.Addr) (*connState, int) {
	for _, cs := range d.conns {
		if prefixMatch(cs.c.LocalAddrs, local) && prefixMatch(cs.c.RemoteAddrs, remote) {
			return cs, 0
		}
	}
	return nil, 0
}

// localAddrFor picks this side's IKE address toward remote.
func (d *Daemon) localAddrFor(c *config.Connection, remote netip.Addr) (netip.Addr, bool) {
	for _, p := range c.LocalAddrs {
		if p.IsSingleIP() && p.Addr().Is4() == remote.Is4() {
			return p.Addr().Unmap(), true
		}
	}
	for _, a := range d.opts.Addrs {
		if a.Unmap().Is4() == remote.Is4() && prefixMatch(c.LocalAddrs, a) {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// findConn resolves a name for Initiate and Terminate: a connection, a
// child, or "conn/child".
func (d *Daemon) findConn(name string) (*connState, int, error) {
	for _, cs := range d.conns {
		if cs.c.Name == name {
			return cs, 0, nil
		}
		for i, ch := range cs.c.Children {
			if ch.Name == name || cs.c.Name+"/"+ch.Name == name {
				return cs, i, nil
			}
		}
	}
	return nil, 0, fmt.Errorf("no connection or child named %q", name)
}

// Initiate starts the IKE SA of a connection (or of the connection of a
// child, negotiating that child) unless it is up or coming up, and waits
// until it is established or failed, or ctx ends.
func (d *Daemon) Initiate(ctx context.Context, name string) error {
	cs, ci, err := d.findConn(name)
	if err != nil {
		return err
	}
	sa, err := d.initiate(cs, ci, "command")
	if err != nil {
		return err
	}
	select {
	case <-sa.up:
		if sa.failErr != nil {
			return sa.failErr
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// initiate returns the IKE SA of cs's child ci, starting one if none is
// up or coming up.
func (d *Daemon) initiate(cs *connState, ci int, why string) (*ikeSA, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, errors.New("daemon closed")
	}
	var up *ikeSA
	for sa := range d.sas {
		if sa.conn == cs && sa.getState() != stateDeleting {
			if sa.child == ci {
				d.mu.Unlock()
				return sa, nil
			}
			if sa.getState() == stateEstablished {
				up = sa
			}
		}
	}
	d.mu.Unlock()
	// Another child of a connection that is up: a CREATE_CHILD_SA in
	// its IKE SA, when the session can (else a new IKE SA, below).
	if up != nil && up.createChild(ci, why) {
		return up, nil
	}
	ra, ok := remoteAddr(cs.c)
	if !ok {
		return nil, fmt.Errorf("connection %s has no single remote address to initiate to", cs.c.Name)
	}
	la, ok := d.localAddrFor(cs.c, ra)
	if !ok {
		return nil, fmt.Errorf("connection %s: no local address toward %v", cs.c.Name, ra)
	}
	lport, rport := cs.c.LocalPort, cs.c.RemotePort
	if lport == 0 {
		lport = IKEPort
	}
	if rport == 0 {
		rport = IKEPort
	}
	local, remote := netip.AddrPortFrom(la, lport), netip.AddrPortFrom(ra, rport)
	xcfg, err := exchangeConfig(d.opts.Config, cs.c, cs.c.Children[ci], local, remote)
	if err != nil {
		d.Stats.fail("config")
		return nil, err
	}
	sa := d.newSA(cs, ci, true, local, remote, xcfg)
	if sa == nil {
		return nil, errors.New("daemon closed")
	}
	d.log.Info("ike initiate", "conn", cs.c.Name, "child", cs.c.Children[ci].Name, "local", local.String(), "remote", remote.String(), "trigger", why)
	go sa.runInitiator()
	return sa, nil
}

// Terminate deletes the IKE SAs of a connection (or a child's connection),
// telling the peer, and waits until they are gone or ctx ends.
func (d *Daemon) Terminate(ctx context.Context, name string) error {
	cs, _, err := d.findConn(name)
	if err != nil {
		return err
	}
	d.mu.Lock()
	var list []*ikeSA
	for sa := range d.sas {
		if sa.conn == cs {
			list = append(list, sa)
		}
	}
	d.mu.Unlock()
	if len(list) == 0 {
		return fmt.Errorf("connection %s has no IKE SA", cs.c.Name)
	}
	for _, sa := range list {
		done := make(chan struct{})
		sa.terminate(done)
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// engineEvent handles the xfrm engine's ACQUIREs and expiries.
func (d *Daemon) engineEvent(ev xfrm.Event) {
	switch ev.Type {
	case xfrm.EventAcquire:
		if ev.Template == nil {
			return
		}
		cs, ci := d.childByReqID(ev.Template.ReqID)
		if cs == nil {
			return
		}
		d.Stats.Acquires.Add(1)
		if _, err := d.initiate(cs, ci, "acquire"); err != nil {
			d.log.Warn("ike acquire", "conn", cs.c.Name, "flow", ev.Flow.String(), "err", err)
		}
	case xfrm.EventSoftExpire, xfrm.EventHardExpire:
		if ev.SA == nil {
			return
		}
		c := &ev.SA.Config
		d.mu.Lock()
		var owner *ikeSA
		for sa := range d.sas {
			if sa.ownsSPI(c.SPI, c.Dst) {
				owner = sa
				break
			}
		}
		d.mu.Unlock()
		if owner != nil {
			owner.expired(c.SPI, c.Dst, ev.Type == xfrm.EventHardExpire)
		}
	}
}

func (d *Daemon) childByReqID(reqid uint32) (*connState, int) {
	for _, cs := range d.conns {
		for i, r := range cs.reqids {
			if r == reqid {
				return cs, i
			}
		}
	}
	return nil, 0
}

// removeSA forgets an IKE SA's indexes.
func (d *Daemon) removeSA(sa *ikeSA) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.sas, sa)
	for k, v := range d.bySPI {
		if v == sa {
			delete(d.bySPI, k)
		}
	}
	if sa.halfKey != nil && d.halfOpen[*sa.halfKey] == sa {
		delete(d.halfOpen, *sa.halfKey)
	}
}

// Stats are the daemon's counters; gauges are computed by Snapshot.
type Stats struct {
	InMessages, OutMessages atomic.Uint64
	// InMalformed: not an IKE header, or a length that does not match.
	InMalformed atomic.Uint64
	// InUnknownSPI: for no IKE SA of ours.
	InUnknownSPI atomic.Uint64
	// InNotIKE: datagrams on 4500 that were neither IKE nor keepalive.
	InNotIKE    atomic.Uint64
	InKeepalive atomic.Uint64
	// InDropped: messages an IKE SA dropped (unauthenticated, outside
	// the window, or its queue full).
	InDropped       atomic.Uint64
	HalfOpenRefused atomic.Uint64
	CookiesSent     atomic.Uint64
	NoConnection    atomic.Uint64
	Acquires        atomic.Uint64
	EventsDropped   atomic.Uint64
	IKEEstablished  atomic.Uint64
	ChildInstalled  atomic.Uint64
	ChildDeleted    atomic.Uint64
	IKEDeleted      atomic.Uint64
	ChildRekeys     atomic.Uint64
	IKERekeys       atomic.Uint64

	fmu      sync.Mutex
	failures map[string]*atomic.Uint64
}

// Failure reasons, the label of ike_failures_total.
var failureReasons = []string{"timeout", "auth", "no_proposal", "ts_unacceptable", "invalid_ke", "peer_error", "install", "config", "dead", "other"}

func (s *Stats) init() {
	s.failures = map[string]*atomic.Uint64{}
	for _, r := range failureReasons {
		s.failures[r] = new(atomic.Uint64)
	}
}

func (s *Stats) fail(reason string) {
	s.fmu.Lock()
	c := s.failures[reason]
	if c == nil {
		c = s.failures["other"]
	}
	s.fmu.Unlock()
	c.Add(1)
}

// failReason classifies an exchange's error.
func failReason(err error) string {
	var pe *exchange.PeerError
	switch {
	case errors.Is(err, exchange.ErrTimeout):
		return "timeout"
	case errors.As(err, &pe):
		switch pe.Notify {
		case message.NO_PROPOSAL_CHOSEN:
			return "no_proposal"
		case message.AUTHENTICATION_FAILED:
			return "auth"
		case message.TS_UNACCEPTABLE:
			return "ts_unacceptable"
		case message.INVALID_KE_PAYLOAD:
			return "invalid_ke"
		}
		return "peer_error"
	case errors.Is(err, errAuth):
		return "auth"
	}
	return "other"
}

var errAuth = errors.New("authentication failed")

// Stat is one named value of Snapshot.
type Stat struct {
	Name  string
	Value uint64
	// Label is the reason of a failure counter ("" otherwise).
	Label string
}

// Snapshot returns the counters and the gauges (IKE and CHILD SAs up,
// half-open IKE SAs).
func (d *Daemon) Snapshot() []Stat {
	s := &d.Stats
	d.mu.Lock()
	var up, children uint64
	for sa := range d.sas {
		if sa.getState() == stateEstablished {
			up++
			children += uint64(sa.upCount())
		}
	}
	half := uint64(len(d.halfOpen))
	d.mu.Unlock()
	out := []Stat{
		{Name: "IKESAsEstablished", Value: up},
		{Name: "IKEChildSAsInstalled", Value: children},
		{Name: "IKESAsHalfOpen", Value: half},
		{Name: "IKEEstablishedTotal", Value: s.IKEEstablished.Load()},
		{Name: "IKEChildInstalledTotal", Value: s.ChildInstalled.Load()},
		{Name: "IKEChildDeletedTotal", Value: s.ChildDeleted.Load()},
		{Name: "IKEDeletedTotal", Value: s.IKEDeleted.Load()},
		{Name: "IKEChildRekeysTotal", Value: s.ChildRekeys.Load()},
		{Name: "IKERekeysTotal", Value: s.IKERekeys.Load()},
		{Name: "IKEInMessages", Value: s.InMessages.Load()},
		{Name: "IKEOutMessages", Value: s.OutMessages.Load()},
		{Name: "IKEInMalformed", Value: s.InMalformed.Load()},
		{Name: "IKEInUnknownSPI", Value: s.InUnknownSPI.Load()},
		{Name: "IKEInDropped", Value: s.InDropped.Load()},
		{Name: "IKEInNotIKE", Value: s.InNotIKE.Load()},
		{Name: "IKEHalfOpenRefused", Value: s.HalfOpenRefused.Load()},
		{Name: "IKECookiesSent", Value: s.CookiesSent.Load()},
		{Name: "IKENoConnection", Value: s.NoConnection.Load()},
		{Name: "IKEAcquires", Value: s.Acquires.Load()},
	}
	s.fmu.Lock()
	for _, r := range failureReasons {
		out = append(out, Stat{Name: "IKEFailures", Label: r, Value: s.failures[r].Load()})
	}
	s.fmu.Unlock()
	return out
}
