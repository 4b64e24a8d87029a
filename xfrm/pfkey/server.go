package pfkey

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// Broadcast targets, as Linux af_key's pfkey_broadcast flags.
const (
	BroadcastAll         = 0
	BroadcastOne         = 1
	BroadcastRegistered  = 2
	BroadcastPromiscOnly = 4
)

// Server answers PF_KEY messages against an engine and sends ACQUIRE and
// EXPIRE to registered sockets. Safe for concurrent use.
type Server struct {
	engine *xfrm.Engine

	// Stats counts what the server refused or survived.
	Stats ServerStats

	mu    sync.RWMutex
	socks map[*Socket]struct{}

	unsub func()
}

// Socket is one PF_KEY endpoint (a control-socket connection).
type Socket struct {
	srv        *Server
	out        Output
	registered atomic.Uint32 // bit per SA type
	promisc    atomic.Bool
}

// NewServer returns a server for engine and subscribes it to the engine's
// ACQUIRE and EXPIRE events.
func NewServer(engine *xfrm.Engine) *Server {
	s := &Server{engine: engine, socks: make(map[*Socket]struct{})}
	s.unsub = engine.Subscribe(s.event)
	return s
}

// Close unsubscribes the server from the engine.
func (s *Server) Close() { s.unsub() }

// Open creates a socket whose messages all go to send, a dump included, at
// once. send must not block (it runs on the packet path for ACQUIRE and
// EXPIRE). A transport with flow control uses OpenOutput.
func (s *Server) Open(send func(msg []byte)) *Socket { return s.OpenOutput(funcOutput(send)) }

// OpenOutput creates a socket whose messages go to out: replies to its
// own requests through out.Reply, asynchronous messages through
// out.Notify, DUMP and SPDDUMP through out.Stream.
func (s *Server) OpenOutput(out Output) *Socket {
	k := &Socket{srv: s, out: out}
	s.mu.Lock()
	s.socks[k] = struct{}{}
	s.mu.Unlock()
	return k
}

// Close removes the socket.
func (k *Socket) Close() {
	k.srv.mu.Lock()
	delete(k.srv.socks, k)
	k.srv.mu.Unlock()
}

// send answers the socket's own request (may wait for the reader).
func (k *Socket) send(msg []byte) { k.out.Reply(msg) }

// notify queues an asynchronous message without waiting; a reader too
// slow for it loses it (the transport counts and reports the loss).
func (k *Socket) notify(msg []byte) { k.out.Notify(msg) }

// Registered reports whether the socket registered for an SA type.
func (k *Socket) Registered(satype uint8) bool { return k.registered.Load()&(1<<satype) != 0 }

// Broadcast sends msg as pfkey_broadcast does: promiscuous sockets get a
// copy of everything; then all sockets (All), registered ones
// (Registered), or none; and finally one, when not nil. one is the socket
// whose request this answers: its copy is a reply, which waits for the
// reader to make room; every other copy is asynchronous and is dropped for
// a reader that is too slow, as a full sk_rcvbuf drops it in Linux.
func (s *Server) Broadcast(msg []byte, flags int, one *Socket) {
	s.mu.RLock()
	for k := range s.socks {
		if k.promisc.Load() {
			k.notify(msg)
		}
		if k == one {
			continue
		}
		if flags != BroadcastAll {
			if flags&BroadcastPromiscOnly != 0 {
				continue
			}
			if flags&BroadcastRegistered != 0 && k.registered.Load() == 0 {
				continue
			}
			if flags&BroadcastOne != 0 {
				continue
			}
		}
		k.notify(msg)
	}
	s.mu.RUnlock()
	if one != nil {
		one.send(msg)
	}
}

func errnoOf(err error) syscall.Errno {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Errno
	}
	switch {
	case errors.Is(err, xfrm.ErrExist):
		return syscall.EEXIST
	case errors.Is(err, xfrm.ErrNotFound):
		return syscall.ENOENT
	}
	return syscall.EINVAL
}

// ServerStats are the server's own counters.
type ServerStats struct {
	// HandlerPanics counts messages whose handling panicked: a defect that
	// validation should have caught. Each was answered with EINVAL and the
	// server went on (see Handle).
	HandlerPanics atomic.Uint64
}

// Handle processes one message from the socket. Every failure is answered
// with the request header and sadb_msg_errno set; a message that fails
// validation changes nothing.
//
// As the last line of defence, as net/http isolates a handler, a panic
// while handling one message does not take the daemon (and every SA and
// policy with it) down: that message is answered with EINVAL, counted in
// Stats.HandlerPanics, and the socket and server go on. Validation is
// still what keeps state consistent; this only keeps a missed case from
// being fatal.
func (k *Socket) Handle(b []byte) {
	defer func() {
		if v := recover(); v != nil {
			k.srv.Stats.HandlerPanics.Add(1)
			k.send(ErrorReply(b, syscall.EINVAL))
		}
	}()
	k.handle(b)
}

func (k *Socket) handle(b []byte) {
	m, err := DecodeRequest(b)
	if err != nil {
		k.send(ErrorReply(b, errnoOf(err)))
		return
	}
	s := k.srv
	// Every message sent to the kernel is copied to promiscuous sockets.
	s.Broadcast(b, BroadcastPromiscOnly, nil)
	if err := s.dispatch(k, m); err != nil {
		k.send(ErrorReply(b, errnoOf(err)))
	}
}

// reply fills the header fields of a reply from the request.
func reply(req *Msg, r *Msg) []byte {
	r.Type, r.Seq, r.PID = req.Type, req.Seq, req.PID
	if r.SAType == 0 {
		r.SAType = req.SAType
	}
	return r.MustEncode()
}

// testHookDispatch, when set by a test, runs before every dispatch (to
// make a handler fail on purpose).
var testHookDispatch func(*Msg)

func (s *Server) dispatch(k *Socket, m *Msg) error {
	if testHookDispatch != nil {
		testHookDispatch(m)
	}
	if m.Errno != 0 && m.Type != MsgAcquire {
		return errorf(syscall.EINVAL, "request with errno set")
	}
	switch m.Type {
	case MsgGetSPI:
		return s.getSPI(k, m)
	case MsgUpdate, MsgAdd:
		return s.addSA(m)
	case MsgDelete:
		return s.deleteSA(m)
	case MsgGet:
		return s.getSA(k, m)
	case MsgAcquire:
		// A key manager reporting a failed negotiation. Linux marks the
		// larval SA as failed, which keeps the flow from asking again
		// until it times out; the engine's larval SA already does that.
		return nil
	case MsgRegister:
		return s.register(k, m)
	case MsgExpire:
		return s.expire(m)
	case MsgFlush:
		return s.flush(m)
	case MsgDump:
		return s.dump(k, m)
	case MsgXPromisc:
		if m.SAType > 1 {
			return errorf(syscall.EINVAL, "X_PROMISC takes 0 or 1")
		}
		k.promisc.Store(m.SAType == 1)
		s.Broadcast(reply(m, &Msg{}), BroadcastAll, nil)
		return nil
	case MsgXSPDAdd, MsgXSPDUpdate:
		return s.spdAdd(m)
	case MsgXSPDDelete:
		return s.spdDelete(m)
	case MsgXSPDDelete2, MsgXSPDGet:
		return s.spdGet(k, m)
	case MsgXSPDDump:
		return s.spdDump(k, m)
	case MsgXSPDFlush:
		s.engine.SPD.Flush()
		s.Broadcast(reply(m, &Msg{}), BroadcastAll, nil)
		return nil
	}
	return errorf(syscall.EOPNOTSUPP, "%s is not supported", MsgName(m.Type))
}

func protoOrErr(m *Msg) (xfrm.Proto, error) {
	p := ProtoOf(m.SAType)
	if p == 0 {
		return 0, errorf(syscall.EINVAL, "SA type %d", m.SAType)
	}
	return p, nil
}

// protoOrAll is protoOrErr where SATYPE_UNSPEC means every protocol (0).
func protoOrAll(m *Msg) (xfrm.Proto, error) {
	if m.SAType == SATypeUnspec {
		return 0, nil
	}
	return protoOrErr(m)
}

func (s *Server) getSPI(k *Socket, m *Msg) error {
	proto, err := protoOrErr(m)
	if err != nil {
		return err
	}
	if m.Src == nil || m.Dst == nil {
		return errorf(syscall.EINVAL, "GETSPI needs source and destination addresses")
	}
	if m.Src.Addr.Is4() != m.Dst.Addr.Is4() {
		return errorf(syscall.EINVAL, "address families differ")
	}
	mode, reqid := xfrm.ModeTransport, uint32(0)
	if m.SA2 != nil {
		if mode, err = modeFromPF(m.SA2.Mode); err != nil {
			return err
		}
		reqid = m.SA2.ReqID
	}
	lo, hi, err := spiRange(proto, m.SPIRange)
	if err != nil {
		return err
	}
	var sa *xfrm.SA
	try := func(spi uint32) error {
		if s.engine.SAD.Lookup(m.Dst.Addr, proto, spi) != nil {
			return xfrm.ErrExist
		}
		l, err := xfrm.NewLarvalSA(proto, m.Src.Addr, m.Dst.Addr, spi, mode, reqid)
		if err != nil {
			return errorf(syscall.EINVAL, "%v", err)
		}
		if err := s.engine.SAD.Add(l); err != nil {
			return err
		}
		sa = l
		return nil
	}
	if lo == hi {
		if err := try(lo); err != nil {
			return errorf(syscall.ENOENT, "SPI %#x is taken", lo)
		}
	} else {
		var rb [4]byte
		for i := 0; i < 1000 && sa == nil; i++ {
			rand.Read(rb[:])
			// In 64 bits: hi-lo+1 is 2^32 for a full 32-bit range.
			spi := lo + uint32(uint64(binary.BigEndian.Uint32(rb[:]))%(uint64(hi)-uint64(lo)+1))
			if err := try(spi); err != nil && !errors.Is(err, xfrm.ErrExist) {
				return err
			}
		}
		if sa == nil {
			return errorf(syscall.ENOENT, "no free SPI in %#x-%#x", lo, hi)
		}
	}
	s.Broadcast(reply(m, StateMsg(sa, false)), BroadcastOne, k)
	return nil
}

// spiRange is the range GETSPI picks from, validated as Linux's
// pfkey_getspi and verify_spi_info do: without an SPI range extension
// 0x100-0x0fffffff; an IPComp CPI is 16 bits (RFC 3173 §2.1), so for
// IPComp a range reaching past 0xffff is EINVAL, and so is no range at all
// (the default one does). An empty range (min > max) is EINVAL. SPIs
// 0-255 are reserved for ESP and AH (RFC 4303 §2.1): the range starts at
// 0x100 at least; CPI 0 is none.
func spiRange(proto xfrm.Proto, r *SPIRange) (lo, hi uint32, err error) {
	lo, hi = 0x100, 0x0fffffff
	if r != nil {
		lo, hi = r.Min, r.Max
	}
	if proto == xfrm.ProtoIPComp && hi > 0xffff {
		return 0, 0, errorf(syscall.EINVAL, "IPComp CPI range %#x-%#x: a CPI is 16 bits (give an SPI range within 0x1-0xffff)", lo, hi)
	}
	switch {
	case proto != xfrm.ProtoIPComp && lo < 0x100:
		lo = 0x100
	case proto == xfrm.ProtoIPComp && lo == 0:
		lo = 1
	}
	if lo > hi {
		return 0, 0, errorf(syscall.EINVAL, "SPI range %#x-%#x is empty", lo, hi)
	}
	return lo, hi, nil
}

func (s *Server) addSA(m *Msg) error {
	cfg, err := ConfigFromMsg(m)
	if err != nil {
		return err
	}
	sa, err := xfrm.NewSA(cfg)
	if err != nil {
		return errorf(syscall.EINVAL, "%v", err)
	}
	if m.Type == MsgAdd {
		if err := s.engine.SAD.Add(sa); err != nil {
			xfrm.DiscardSA(sa)
			return errorf(syscall.EEXIST, "%v", err)
		}
	} else {
		// A larval SA is completed; a mature one keeps its keys,
		// counters and replay window and takes the new lifetimes only
		// (xfrm.SAD.Update).
		if err := sameEncap(s.engine.SAD.Lookup(cfg.Dst, cfg.Proto, cfg.SPI), &cfg); err != nil {
			xfrm.DiscardSA(sa)
			return err
		}
		n, err := s.engine.SAD.Update(sa)
		switch {
		case errors.Is(err, xfrm.ErrNotFound):
			xfrm.DiscardSA(sa)
			return errorf(syscall.ESRCH, "no SA %v spi %#x dst %v to update", cfg.Proto, cfg.SPI, cfg.Dst)
		case err != nil:
			xfrm.DiscardSA(sa)
			return errorf(syscall.EINVAL, "%v", err)
		}
		sa = n
	}
	s.Broadcast(reply(m, StateMsg(sa, true)), BroadcastAll, nil)
	return nil
}

// sameEncap refuses an UPDATE that would change a mature SA's UDP
// encapsulation. xfrm.SAD.Update takes only the lifetimes of such an SA,
// so the new type, ports or original address would be dropped while the
// key manager is told errno 0. (Linux's xfrm_state_update copies the
// encapsulation in place; moving an SA's peer port is the data plane's
// port floating here, not an UPDATE.) The keepalive interval has no
// PF_KEY form and is not compared. old nil or larval: nothing to check.
func sameEncap(old *xfrm.SA, cfg *xfrm.SAConfig) error {
	if old == nil || old.State() == xfrm.StateLarval {
		return nil
	}
	a, b := old.Config.Encap, cfg.Encap
	a.Keepalive, b.Keepalive = 0, 0
	if a.OA.IsUnspecified() {
		a.OA = netip.Addr{}
	}
	if a != b {
		return errorf(syscall.EINVAL, "SA %v spi %#x dst %v is mature: UPDATE may change its lifetimes only, not its UDP encapsulation", cfg.Proto, cfg.SPI, cfg.Dst)
	}
	return nil
}

func (s *Server) lookupSA(m *Msg) (*xfrm.SA, error) {
	proto, err := protoOrErr(m)
	if err != nil {
		return nil, err
	}
	if m.SA == nil || m.Dst == nil {
		return nil, errorf(syscall.EINVAL, "SA and destination address extensions are required")
	}
	sa := s.engine.SAD.Lookup(m.Dst.Addr, proto, m.SA.SPI)
	if sa == nil || (m.Src != nil && !m.Src.Addr.IsUnspecified() && sa.Config.Src != m.Src.Addr) {
		return nil, errorf(syscall.ESRCH, "no SA %v spi %#x dst %v", proto, m.SA.SPI, m.Dst.Addr)
	}
	return sa, nil
}

func (s *Server) deleteSA(m *Msg) error {
	sa, err := s.lookupSA(m)
	if err != nil {
		return err
	}
	c := &sa.Config
	if _, err := s.engine.SAD.Delete(c.Dst, c.Proto, c.SPI); err != nil {
		return errorf(syscall.ESRCH, "%v", err)
	}
	r := &Msg{SA: &SA{SPI: c.SPI}, Src: hostAddr(c.Src, 0), Dst: hostAddr(c.Dst, 0)}
	s.Broadcast(reply(m, r), BroadcastAll, nil)
	return nil
}

func (s *Server) getSA(k *Socket, m *Msg) error {
	sa, err := s.lookupSA(m)
	if err != nil {
		return err
	}
	r := heldStateMsg(sa) // keys copied under a reference, as DUMP does
	if r == nil {
		return errorf(syscall.ESRCH, "SA %v spi %#x was deleted", sa.Config.Proto, sa.Config.SPI)
	}
	s.Broadcast(reply(m, r), BroadcastOne, k)
	return nil
}

func (s *Server) expire(m *Msg) error {
	sa, err := s.lookupSA(m)
	if err != nil {
		return err
	}
	switch {
	case m.LifetimeHard != nil:
		xfrm.ExpireSA(sa, true)
	case m.LifetimeSoft != nil:
		xfrm.ExpireSA(sa, false)
	default:
		return errorf(syscall.EINVAL, "EXPIRE needs a hard or soft lifetime extension")
	}
	return nil
}

func (s *Server) register(k *Socket, m *Msg) error {
	if m.SAType > SATypeMax {
		return errorf(syscall.EINVAL, "SA type %d", m.SAType)
	}
	if m.SAType != SATypeUnspec {
		bit := uint32(1) << m.SAType
		for {
			old := k.registered.Load()
			if old&bit != 0 {
				return errorf(syscall.EEXIST, "already registered for SA type %d", m.SAType)
			}
			if k.registered.CompareAndSwap(old, old|bit) {
				break
			}
		}
	}
	r := &Msg{}
	if m.SAType == SATypeESP || m.SAType == SATypeUnspec {
		r.SupportedAuth, r.SupportedEncrypt = supported()
	}
	s.Broadcast(reply(m, r), BroadcastRegistered, k)
	return nil
}

func (s *Server) flush(m *Msg) error {
	proto, err := protoOrAll(m)
	if err != nil {
		return err
	}
	s.engine.SAD.Flush(proto)
	s.Broadcast(reply(m, &Msg{}), BroadcastAll, nil)
	return nil
}

// dump starts a DUMP stream: a snapshot of SA references, whose keys are
// read under a reference one message at a time as the reader drains its
// socket. Nothing is dropped however large the SAD; an SA deleted before
// its turn is left out.
func (s *Server) dump(k *Socket, m *Msg) error {
	proto, err := protoOrAll(m)
	if err != nil {
		return err
	}
	sas := sortedSAs(s.engine.SAD, proto)
	if len(sas) == 0 {
		return errorf(syscall.ENOENT, "no SAs")
	}
	d := &dumpStream{n: len(sas), typ: m.Type, pid: m.PID, empty: ErrorReply(m.MustEncode(), syscall.ENOENT),
		msg: func(i int) *Msg {
			sa := sas[i]
			sas[i] = nil // let a deleted SA go as soon as it has been passed
			return heldStateMsg(sa)
		}}
	if !k.out.Stream(d.next) {
		return errorf(syscall.EBUSY, "a dump is already running on this socket")
	}
	return nil
}

func policyReply(p *xfrm.Policy) *Msg {
	r, err := PolicyMsg(p)
	if err != nil {
		// A Go-API policy PF_KEY cannot express exactly (a port
		// range): send what it can.
		q := *p
		q.Sel.SrcPorts, q.Sel.DstPorts = xfrm.PortRange{Lo: p.Sel.SrcPorts.Lo, Hi: p.Sel.SrcPorts.Lo}, xfrm.PortRange{Lo: p.Sel.DstPorts.Lo, Hi: p.Sel.DstPorts.Lo}
		r, err = PolicyMsg(&q)
		if err != nil {
			r = &Msg{Policy: &Policy{Dir: dirToPF(p.Dir), ID: p.ID, Priority: p.Priority}}
		}
	}
	return r
}

func (s *Server) spdAdd(m *Msg) error {
	p, err := PolicyFromMsg(m)
	if err != nil {
		return err
	}
	var id uint32
	if m.Type == MsgXSPDAdd {
		id, err = s.engine.SPD.Add(p)
	} else {
		id, err = s.engine.SPD.Update(p)
	}
	if err != nil {
		return err
	}
	np := s.engine.SPD.Get(id)
	if np == nil {
		np = p
		np.ID = id
	}
	s.Broadcast(reply(m, policyReply(np)), BroadcastAll, nil)
	return nil
}

func (s *Server) spdDelete(m *Msg) error {
	p, err := PolicyFromMsg(m)
	if err != nil && m.Policy != nil && m.Policy.Type == PolicyIPsec && len(m.Policy.Requests) == 0 {
		// SPDDELETE may carry a bare policy header without requests.
		q := *m
		pol := *m.Policy
		pol.Type = PolicyNone
		q.Policy = &pol
		p, err = PolicyFromMsg(&q)
	}
	if err != nil {
		return err
	}
	old, err := s.engine.SPD.Delete(p.Dir, p.Sel)
	if err != nil {
		return errorf(syscall.ENOENT, "%v", err)
	}
	s.Broadcast(reply(m, policyReply(old)), BroadcastAll, nil)
	return nil
}

func (s *Server) spdGet(k *Socket, m *Msg) error {
	if m.Policy == nil {
		return errorf(syscall.EINVAL, "policy extension required")
	}
	id := m.Policy.ID
	if _, err := dirFromPF(uint8(id&7) + 1); err != nil {
		return errorf(syscall.ENOENT, "policy index %d", id)
	}
	var p *xfrm.Policy
	if m.Type == MsgXSPDDelete2 {
		var err error
		if p, err = s.engine.SPD.DeleteByID(id); err != nil {
			return errorf(syscall.ENOENT, "%v", err)
		}
		s.Broadcast(reply(m, policyReply(p)), BroadcastAll, nil)
		return nil
	}
	if p = s.engine.SPD.Get(id); p == nil {
		return errorf(syscall.ENOENT, "policy index %d", id)
	}
	s.Broadcast(reply(m, policyReply(p)), BroadcastOne, k)
	return nil
}

// spdDump starts an SPDDUMP stream over a snapshot of the policies, as
// dump does for SAs.
func (s *Server) spdDump(k *Socket, m *Msg) error {
	var ps []*xfrm.Policy
	s.engine.SPD.Walk(func(p *xfrm.Policy) bool {
		ps = append(ps, p)
		return true
	})
	if len(ps) == 0 {
		return errorf(syscall.ENOENT, "no policies")
	}
	d := &dumpStream{n: len(ps), typ: m.Type, pid: m.PID, empty: ErrorReply(m.MustEncode(), syscall.ENOENT),
		msg: func(i int) *Msg {
			p := ps[i]
			ps[i] = nil
			return policyReply(p)
		}}
	if !k.out.Stream(d.next) {
		return errorf(syscall.EBUSY, "a dump is already running on this socket")
	}
	return nil
}

// event turns engine events into ACQUIRE and EXPIRE messages for the
// registered sockets.
func (s *Server) event(ev xfrm.Event) {
	switch ev.Type {
	case xfrm.EventAcquire:
		// The ACQUIRE's sequence number is the larval SA's, so a key
		// manager's GETSPI/UPDATE can refer to it as af_key's do.
		b := AcquireMsg(ev, ev.SA.AcquireSeq()).MustEncode()
		s.Broadcast(b, BroadcastRegistered, nil)
	case xfrm.EventSoftExpire, xfrm.EventHardExpire:
		s.Broadcast(ExpireMsg(ev.SA, ev.Type == xfrm.EventHardExpire).MustEncode(), BroadcastRegistered, nil)
	case xfrm.EventNewMapping:
		// An error here is an SA that is not encapsulated ESP: the
		// engine raises the event only for those.
		_ = s.NewMapping(ev.SA, ev.NewPeer.Addr, ev.NewPeer.Port)
	}
}

// NewMapping broadcasts SADB_X_NAT_T_NEW_MAPPING for a UDP-encapsulated
// SA whose peer now sends from newAddr:newPort to the registered sockets,
// as Linux's pfkey_send_new_mapping does (BROADCAST_REGISTERED). The data
// plane's new-mapping event calls it; an SA that is not encapsulated ESP
// is EINVAL and nothing is sent.
func (s *Server) NewMapping(sa *xfrm.SA, newAddr netip.Addr, newPort uint16) error {
	m, err := NewMappingMsg(sa, newAddr, newPort)
	if err != nil {
		return err
	}
	s.Broadcast(m.MustEncode(), BroadcastRegistered, nil)
	return nil
}

// AcquireMsg builds the ACQUIRE Linux's pfkey_send_acquire sends: the
// addresses the SA must have (the template's tunnel endpoints, else the
// packet's), the policy, and a proposal from the algorithm table.
func AcquireMsg(ev xfrm.Event, seq uint32) *Msg {
	t := ev.Template
	src, dst := ev.Flow.Src, ev.Flow.Dst
	if t.Mode == xfrm.ModeTunnel {
		src, dst = t.Src, t.Dst
	}
	m := &Msg{
		Type:   MsgAcquire,
		SAType: SATypeOf(t.Proto),
		Seq:    seq,
		Src:    hostAddr(src, 0),
		Dst:    hostAddr(dst, 0),
		Policy: &Policy{Type: PolicyIPsec, Dir: dirToPF(ev.Policy.Dir), ID: ev.Policy.ID, Priority: ev.Policy.Priority},
		SA2:    &SA2{Mode: modeToPF(t.Mode), ReqID: t.ReqID},
	}
	if t.Proto == xfrm.ProtoESP {
		m.Proposal = espProposal()
	}
	return m
}

// ExpireMsg builds the EXPIRE Linux's key_notify_sa_expire sends.
func ExpireMsg(sa *xfrm.SA, hard bool) *Msg {
	m := StateMsg(sa, false)
	m.Type = MsgExpire
	m.KeyAuth, m.KeyEncrypt = nil, nil
	soft, hardLft := sa.Lifetimes()
	if hard {
		m.LifetimeHard = lifetimeExt(&hardLft)
		m.LifetimeSoft = nil
		m.SA.State = SAStateDead
	} else {
		m.LifetimeSoft = lifetimeExt(&soft)
		m.LifetimeHard = nil
		m.SA.State = SAStateDying
	}
	return m
}
