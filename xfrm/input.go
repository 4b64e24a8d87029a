package xfrm

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/ipsecstack/ipsecstack/xfrm/esp"
)

// Next-header values the input loop handles.
const (
	innerIPv4 = 4
	innerIPv6 = 41
	innerNone = 59
)

// SecPath is the list of SAs an inbound packet was decapsulated with,
// outermost first (Linux's sec_path).
type SecPath struct {
	sas [maxBundle]*SA
	n   int
}

// SAs returns the SAs used, outermost first.
func (sp *SecPath) SAs() []*SA { return sp.sas[:sp.n] }

func (sp *SecPath) release() {
	for _, sa := range sp.sas[:sp.n] {
		sa.put()
	}
	sp.n = 0
}

// Input processes an inbound IPsec packet. hdr is its IP header as the IP
// layer saw it (the IPv4 header with options, or the fixed 40-byte IPv6
// header; extension headers already processed, fragments reassembled),
// proto the upper-layer protocol found after it and payload the bytes from
// the IPsec header on; payload is decrypted in place. Input returns the
// decapsulated IP packet, already checked against the inbound policy, for
// re-injection, or nil when the packet was dropped (and counted).
func (e *Engine) Input(hdr []byte, proto Proto, payload []byte, a Allocator) []byte {
	var sp SecPath
	defer sp.release()
	_, dst, ok := addrs(hdr)
	if !ok {
		e.Stats.InHdrError.Add(1)
		return nil
	}
	for {
		if proto != ProtoESP {
			// AH and IPComp arrive with the algorithms issue.
			e.Stats.InNoStates.Add(1)
			return nil
		}
		if len(payload) < esp.HeaderLen {
			e.Stats.InHdrError.Add(1)
			return nil
		}
		if sp.n == maxBundle {
			e.Stats.InHdrError.Add(1)
			return nil
		}
		spi := binary.BigEndian.Uint32(payload)
		sa := e.SAD.Lookup(dst, proto, spi)
		if sa == nil || !sa.tryGet() {
			e.Stats.InNoStates.Add(1)
			return nil
		}
		sp.sas[sp.n] = sa
		sp.n++
		inner, nh, ok := e.inputESP(sa, payload)
		if !ok {
			return nil
		}
		c := &sa.Config
		switch {
		case c.Mode == ModeTunnel && (nh == innerIPv4 || nh == innerIPv6):
			if len(inner) < 1 || (nh == innerIPv4) != (inner[0]>>4 == 4) {
				e.Stats.InStateModeError.Add(1)
				return nil
			}
			out := a.Alloc(len(inner))
			copy(out, inner)
			return e.finishInput(out, &sp)
		case c.Mode == ModeTunnel:
			e.Stats.InStateModeError.Add(1)
			return nil
		case nh == uint8(ProtoESP) || nh == uint8(ProtoAH) || nh == uint8(ProtoIPComp):
			proto, payload = Proto(nh), inner
			continue
		case nh == innerNone:
			// A dummy packet for traffic flow confidentiality (RFC
			// 4303 §2.6): valid, and silently discarded.
			return nil
		default:
			out := rebuildTransport(hdr, nh, inner, a)
			if out == nil {
				e.Stats.InHdrError.Add(1)
				return nil
			}
			return e.finishInput(out, &sp)
		}
	}
}

// inputESP verifies and decrypts one ESP layer.
func (e *Engine) inputESP(sa *SA, b []byte) ([]byte, uint8, bool) {
	if !sa.Usable() {
		e.Stats.InStateInvalid.Add(1)
		return nil, 0, false
	}
	if sa.hardHit.Load() {
		e.Stats.InStateExpired.Add(1)
		return nil, 0, false
	}
	c := &sa.Config
	seqLo := binary.BigEndian.Uint32(b[4:])
	sa.replayMu.Lock()
	seq := sa.replay.Infer(seqLo)
	fresh := sa.replay.Check(seq)
	sa.replayMu.Unlock()
	if !fresh {
		sa.Counters.ReplayErrors.Add(1)
		e.Stats.InStateSeqError.Add(1)
		return nil, 0, false
	}
	inner, nh, err := sa.esp.Open(b, seq, c.ESN)
	if err != nil {
		if errors.Is(err, esp.ErrICV) {
			sa.Counters.IntegrityErrors.Add(1)
		}
		e.Stats.InStateProtoError.Add(1)
		return nil, 0, false
	}
	sa.replayMu.Lock()
	fresh = sa.replay.Update(seq)
	sa.replayMu.Unlock()
	if !fresh {
		sa.Counters.ReplayErrors.Add(1)
		e.Stats.InStateSeqError.Add(1)
		return nil, 0, false
	}
	if !sa.account(len(inner)) {
		e.Stats.InStateExpired.Add(1)
		return nil, 0, false
	}
	return inner, nh, true
}

// finishInput checks the decapsulated packet against the SA selectors and
// the inbound policy.
func (e *Engine) finishInput(pkt []byte, sp *SecPath) []byte {
	var f Flow
	if _, err := ParseFlow(pkt, &f); err != nil {
		e.Stats.InStateModeError.Add(1)
		return nil
	}
	// The innermost SA's selector must cover the packet (Linux's
	// xfrm_selector_match in xfrm_input; a zero selector matches all).
	if last := sp.sas[sp.n-1]; !last.Config.Sel.Match(&f) {
		e.Stats.InStateMismatch.Add(1)
		return nil
	}
	if !e.CheckInbound(&f, sp.SAs()) {
		return nil
	}
	return pkt
}

// CheckInbound applies the inbound SPD to a packet with flow f that was
// decapsulated with the SAs in sp (outermost first; empty for cleartext),
// counting the reason when it rejects. It follows Linux's
// __xfrm_policy_check: no policy accepts, discard rejects, bypass accepts
// unless a tunnel-mode SA was used, protect requires the templates to be
// matched by the SAs in order.
func (e *Engine) CheckInbound(f *Flow, sp []*SA) bool {
	p := e.SPD.Lookup(DirIn, f)
	if p == nil {
		return true
	}
	switch p.Action {
	case ActionDiscard:
		e.Stats.InPolBlock.Add(1)
		return false
	case ActionBypass:
		for _, sa := range sp {
			if sa.Config.Mode == ModeTunnel {
				e.Stats.InTmplMismatch.Add(1)
				return false
			}
		}
		return true
	}
	// Templates are listed in output order (innermost first); the secpath
	// is outermost first, so walk templates backwards.
	k := 0
	for i := len(p.Templates) - 1; i >= 0; i-- {
		t := &p.Templates[i]
		if k < len(sp) && templateMatches(t, sp[k]) {
			k++
			continue
		}
		if t.Level == LevelUse {
			continue
		}
		e.Stats.InTmplMismatch.Add(1)
		return false
	}
	for _, sa := range sp[k:] {
		if sa.Config.Mode == ModeTunnel {
			e.Stats.InTmplMismatch.Add(1)
			return false
		}
	}
	return true
}

// templateMatches is Linux's xfrm_state_ok.
func templateMatches(t *Template, sa *SA) bool {
	c := &sa.Config
	if t.Proto != c.Proto || t.Mode != c.Mode {
		return false
	}
	if t.SPI != 0 && t.SPI != c.SPI {
		return false
	}
	if t.ReqID != 0 && t.ReqID != c.ReqID {
		return false
	}
	if t.Mode == ModeTunnel {
		if t.Dst.IsValid() && t.Dst != c.Dst {
			return false
		}
		if t.Src.IsValid() && t.Src != c.Src {
			return false
		}
	}
	return true
}

// addrs extracts source and destination from an IP header.
func addrs(h []byte) (src, dst netip.Addr, ok bool) {
	if len(h) >= 20 && h[0]>>4 == 4 {
		return netip.AddrFrom4([4]byte(h[12:16])), netip.AddrFrom4([4]byte(h[16:20])), true
	}
	if len(h) >= 40 && h[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(h[8:24])), netip.AddrFrom16([16]byte(h[24:40])), true
	}
	return netip.Addr{}, netip.Addr{}, false
}

// rebuildTransport makes the IP packet a transport-mode SA carried: the
// original header with the inner next header and new lengths. For IPv6 the
// fixed header alone is kept: the extension headers before ESP (and a
// Fragment header left by reassembly) were processed already.
func rebuildTransport(hdr []byte, nh uint8, payload []byte, a Allocator) []byte {
	if hdr[0]>>4 == 4 {
		ihl := int(hdr[0]&0xf) * 4
		if ihl < 20 || ihl > len(hdr) || ihl+len(payload) > 0xffff {
			return nil
		}
		out := a.Alloc(ihl + len(payload))
		copy(out, hdr[:ihl])
		copy(out[ihl:], payload)
		out[9] = nh
		out[6] &= 0x40 // keep DF; the packet is whole
		out[7] = 0
		fixLength(out, true)
		return out
	}
	if len(payload) > 0xffff {
		return nil
	}
	out := a.Alloc(40 + len(payload))
	copy(out, hdr[:40])
	copy(out[40:], payload)
	out[6] = nh
	fixLength(out, false)
	return out
}
