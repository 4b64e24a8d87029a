package setkey

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/esp"
	"github.com/ipsecstack/ipsecstack/xfrm/pfkey"
)

// now is replaced by tests.
var now = time.Now

const timeFmt = "Jan _2 15:04:05 2006"

func algName(kind esp.Kind, id uint8) string {
	if a, ok := pfkey.AlgorithmByID(kind, id); ok {
		return a.SetkeyNames[0]
	}
	return fmt.Sprintf("unknown(%d)", id)
}

func hexKey(k []byte) string {
	var sb strings.Builder
	for i, c := range k {
		if i > 0 && i%4 == 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%02x", c)
	}
	return sb.String()
}

func stateName(s uint8) string {
	switch s {
	case pfkey.SAStateLarval:
		return "larval"
	case pfkey.SAStateMature:
		return "mature"
	case pfkey.SAStateDying:
		return "dying"
	}
	return "dead"
}

// PrintSA prints one SA (a DUMP or GET message) in the format of
// ipsec-tools' `setkey -D`.
func PrintSA(w io.Writer, m *pfkey.Msg) {
	if m.SA == nil || m.Src == nil || m.Dst == nil {
		return
	}
	// A UDP-encapsulated SA prints as ipsec-tools' pfkey_sadump does:
	// the NAT-T ports after the addresses, protocol "esp-udp", and the
	// original address on a line of its own, so that the first line is
	// the one to give `add`.
	natt := m.NATTType != nil && m.NATTType.Type != 0
	src, dst := m.Src.Addr.String(), m.Dst.Addr.String()
	if natt && m.NATTSport != nil {
		src += fmt.Sprintf("[%d]", m.NATTSport.Port)
	}
	if natt && m.NATTDport != nil {
		dst += fmt.Sprintf("[%d]", m.NATTDport.Port)
	}
	fmt.Fprintf(w, "%s %s \n", src, dst)
	mode, reqid := "any", uint32(0)
	if m.SA2 != nil {
		switch m.SA2.Mode {
		case pfkey.ModeTransport:
			mode = "transport"
		case pfkey.ModeTunnel:
			mode = "tunnel"
		}
		reqid = m.SA2.ReqID
	}
	proto := pfkey.ProtoOf(m.SAType).String()
	if natt && m.SAType == pfkey.SATypeESP {
		proto = "esp-udp"
	}
	fmt.Fprintf(w, "\t%s mode=%s spi=%d(0x%08x) reqid=%d(0x%08x)\n", proto, mode, m.SA.SPI, m.SA.SPI, reqid, reqid)
	if natt && m.NATTOA != nil {
		fmt.Fprintf(w, "\tNAT OA=%v\n", m.NATTOA.Addr)
	}
	if m.SAType == pfkey.SATypeIPComp {
		fmt.Fprintf(w, "\tC: deflate \n")
	} else if m.SA.Encrypt != 0 || m.KeyEncrypt != nil {
		fmt.Fprintf(w, "\tE: %s ", algName(esp.KindEncryption, m.SA.Encrypt))
		if m.KeyEncrypt != nil {
			fmt.Fprintf(w, " %s", hexKey(m.KeyEncrypt.Data))
		}
		fmt.Fprintln(w)
	}
	if m.SA.Auth != 0 {
		fmt.Fprintf(w, "\tA: %s ", algName(esp.KindIntegrity, m.SA.Auth))
		if m.KeyAuth != nil {
			fmt.Fprintf(w, " %s", hexKey(m.KeyAuth.Data))
		}
		fmt.Fprintln(w)
	}
	seq := uint32(0)
	if m.SA2 != nil {
		seq = m.SA2.Sequence
	}
	fmt.Fprintf(w, "\tseq=0x%08x replay=%d flags=0x%08x state=%s \n", seq, m.SA.Replay, m.SA.Flags, stateName(m.SA.State))
	var cur, hard, soft pfkey.Lifetime
	if m.LifetimeCurrent != nil {
		cur = *m.LifetimeCurrent
	}
	if m.LifetimeHard != nil {
		hard = *m.LifetimeHard
	}
	if m.LifetimeSoft != nil {
		soft = *m.LifetimeSoft
	}
	t := now()
	created := ""
	diff := uint64(0)
	if cur.AddTime != 0 {
		ct := time.Unix(int64(cur.AddTime), 0)
		created = ct.Format(timeFmt)
		if d := t.Sub(ct); d > 0 {
			diff = uint64(d / time.Second)
		}
	}
	fmt.Fprintf(w, "\tcreated: %-20s\tcurrent: %s\n", created, t.Format(timeFmt))
	fmt.Fprintf(w, "\tdiff: %d(s)\thard: %d(s)\tsoft: %d(s)\n", diff, hard.AddTime, soft.AddTime)
	last := ""
	if cur.UseTime != 0 {
		last = time.Unix(int64(cur.UseTime), 0).Format(timeFmt)
	}
	fmt.Fprintf(w, "\tlast: %-20s\thard: %d(s)\tsoft: %d(s)\n", last, hard.UseTime, soft.UseTime)
	fmt.Fprintf(w, "\tcurrent: %d(bytes)\thard: %d(bytes)\tsoft: %d(bytes)\n", cur.Bytes, hard.Bytes, soft.Bytes)
	fmt.Fprintf(w, "\tallocated: %d\thard: %d\tsoft: %d\n", cur.Allocations, hard.Allocations, soft.Allocations)
	fmt.Fprintf(w, "\tsadb_seq=%d pid=%d refcnt=0\n", m.Seq, m.PID)
}

// PriorityString spells a policy priority as setkey does: "prio def",
// "prio high + 10", "prio low - 5", or a raw number far from every base.
func PriorityString(p uint32) string {
	type base struct {
		name string
		v    uint32
	}
	best, bestD := base{}, int64(-1)
	for _, b := range []base{{"high", PriorityHigh}, {"def", PriorityDefault}, {"low", PriorityLow}} {
		d := int64(p) - int64(b.v)
		if d < 0 {
			d = -d
		}
		if bestD < 0 || d < bestD {
			best, bestD = b, d
		}
	}
	switch {
	case p == best.v:
		return "prio " + best.name
	case p < best.v:
		return fmt.Sprintf("prio %s + %d", best.name, best.v-p)
	}
	return fmt.Sprintf("prio %s - %d", best.name, p-best.v)
}

func selSide(p netip.Prefix, r xfrm.PortRange, v6 bool, icmp bool) string {
	s := ""
	if p.IsValid() && p.IsSingleIP() {
		s = p.Addr().String()
	} else if p.IsValid() {
		s = p.String()
	} else if v6 {
		s = "::/0"
	} else {
		s = "0.0.0.0/0"
	}
	if icmp {
		return s
	}
	if r.IsAny() {
		return s + "[any]"
	}
	if r.Lo == r.Hi {
		return fmt.Sprintf("%s[%d]", s, r.Lo)
	}
	return fmt.Sprintf("%s[%d-%d]", s, r.Lo, r.Hi)
}

// icmpValue spells an ICMP type or code selector: "any", "0" (exact), or
// a range as lo-hi, which the Go API can build though setkey cannot parse.
func icmpValue(r xfrm.PortRange) string {
	switch {
	case r.IsAny():
		return "any"
	case r.Lo == r.Hi:
		return fmt.Sprint(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// PrintPolicy prints one policy in the format of `setkey -DP`.
func PrintPolicy(w io.Writer, p *xfrm.Policy) {
	s := &p.Sel
	v6 := s.Family() == 6
	icmp := s.Proto == xfrm.ProtoICMP || s.Proto == xfrm.ProtoICMPv6 || s.Proto == 135
	up := "any"
	for name, n := range ulProtos {
		if n == s.Proto && s.Proto != xfrm.ProtoAny {
			if up == "any" || len(name) < len(up) || (len(name) == len(up) && name < up) {
				up = name
			}
		}
	}
	if s.Proto == xfrm.ProtoICMPv6 {
		up = "icmp6"
	}
	if icmp && (!s.SrcPorts.IsAny() || !s.DstPorts.IsAny()) {
		up += " " + icmpValue(s.SrcPorts)
		if !s.DstPorts.IsAny() {
			up += "," + icmpValue(s.DstPorts)
		}
	}
	fmt.Fprintf(w, "%s %s %s\n", selSide(s.Src, s.SrcPorts, v6, icmp), selSide(s.Dst, s.DstPorts, v6, icmp), up)
	action := "ipsec"
	switch p.Action {
	case xfrm.ActionBypass:
		action = "none"
	case xfrm.ActionDiscard:
		action = "discard"
	}
	fmt.Fprintf(w, "\t%s %s %s\n", p.Dir, PriorityString(p.Priority), action)
	for _, t := range p.Templates {
		eps := ""
		if t.Mode == xfrm.ModeTunnel {
			eps = t.Src.String() + "-" + t.Dst.String()
		}
		lv := t.Level.String()
		if t.Level == xfrm.LevelUnique && t.ReqID != 0 {
			lv = fmt.Sprintf("unique:%d", t.ReqID)
		}
		fmt.Fprintf(w, "\t%s/%s/%s/%s\n", t.Proto, t.Mode, eps, lv)
	}
	fmt.Fprintf(w, "\tcreated: %-20s  lastused: %-20s\n", "", "")
	fmt.Fprintf(w, "\tlifetime: 0(s) validtime: 0(s)\n")
	fmt.Fprintf(w, "\tspid=%d seq=0 pid=0\n", p.ID)
	fmt.Fprintf(w, "\trefcnt=1\n")
}

// PrintPolicyMsg prints a policy from an SPDDUMP or SPDGET message.
func PrintPolicyMsg(w io.Writer, m *pfkey.Msg) error {
	p, err := pfkey.PolicyFromMsg(m)
	if err != nil {
		return err
	}
	PrintPolicy(w, p)
	return nil
}
