package xfrm

import "github.com/ipsecstack/ipsecstack/xfrm/esp"

// Worst-case overheads assumed for a template no installed SA satisfies yet
// (its SA will come from an ACQUIRE): ESP with a 16-byte IV and block,
// full padding and a 32-byte ICV (AES-CBC with HMAC-SHA-512/256); AH with
// a 32-byte ICV, 8-byte aligned for IPv6. IPComp only sends a payload
// compressed when that makes it smaller.
const (
	defaultESPOverhead = esp.HeaderLen + 16 + 15 + esp.TrailerLen + 32
	defaultAHOverhead  = 48
)

// MaxOutboundOverhead returns the most bytes that applying the bundle of
// any outbound protect policy can add to a packet: per template, the
// largest worst-case overhead of the installed SAs that could satisfy it
// (protocol, mode, reqid, SPI and tunnel endpoints), or a conservative
// default when none is installed, plus the outer header in tunnel mode. The
// stack takes it off the wire MTU on its routes so that TCP segments fit
// after IPsec. It walks both databases: call it when Generation changes,
// not per packet. Per-socket policies are not included.
func (e *Engine) MaxOutboundOverhead() int {
	type saInfo struct {
		proto    Proto
		mode     Mode
		reqid    uint32
		spi      uint32
		src, dst [16]byte
		over     int
	}
	var sas []saInfo
	e.SAD.Walk(func(sa *SA) bool {
		if !sa.Usable() {
			return true
		}
		c := &sa.Config
		i := saInfo{proto: c.Proto, mode: c.Mode, reqid: c.ReqID, spi: c.SPI, src: c.Src.As16(), dst: c.Dst.As16()}
		switch {
		case sa.esp != nil:
			i.over = sa.esp.MaxOverhead()
		case sa.ah != nil:
			i.over = sa.ah.Len(c.Dst.Is4())
		}
		if c.Mode == ModeTunnel {
			i.over += outerLen(c.Dst)
		}
		if sa.encapsulated() {
			i.over += UDPHeaderLen // RFC 3948 §2.1
		}
		sas = append(sas, i)
		return true
	})
	most := 0
	e.SPD.Walk(func(p *Policy) bool {
		if p.Dir != DirOut || p.Action != ActionProtect {
			return true
		}
		total := 0
		for i := range p.Templates {
			t := &p.Templates[i]
			over := -1
			for _, s := range sas {
				if s.proto != t.Proto || s.mode != t.Mode ||
					(t.ReqID != 0 && s.reqid != t.ReqID) || (t.SPI != 0 && s.spi != t.SPI) {
					continue
				}
				if t.Mode == ModeTunnel && (s.src != t.Src.As16() || s.dst != t.Dst.As16()) {
					continue
				}
				over = max(over, s.over)
			}
			if over < 0 {
				switch t.Proto {
				case ProtoESP:
					over = defaultESPOverhead
				case ProtoAH:
					over = defaultAHOverhead
				default:
					over = 0
				}
				if t.Mode == ModeTunnel {
					over += outerLen(t.Dst) // an unset endpoint counts as IPv6
				}
			}
			total += over
		}
		most = max(most, total)
		return true
	})
	return most
}
