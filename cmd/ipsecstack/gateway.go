package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/afpacket"
	"github.com/ipsecstack/ipsecstack/link/tap"
	"github.com/ipsecstack/ipsecstack/link/tun"
	"github.com/ipsecstack/ipsecstack/stack"
)

// The gateway sides of `ipsecstack run`: --lan NICs toward protected
// networks and a --tun device toward the host's own programs. Either turns
// forwarding on; the stack then is a security gateway (RFC 4301 §4.4.1.1:
// out and fwd policies on what it forwards) between them and --link, the
// WAN.

// lanSpec is one --lan with the --lan-addr flags that follow it.
type lanSpec struct {
	Kind  string // "afpacket" or "tap"
	Name  string
	Addrs []netip.Prefix
}

// tunSpec is --tun NAME with its --tun-addr and --tun-mtu flags.
type tunSpec struct {
	Name  string
	Addrs []netip.Prefix
	// MTU of the TUN device; 0: the WAN link's less the stack's IPsec
	// reserve, so host programs send packets that fit after ESP (as
	// wireguard's 1420 does for its overhead).
	MTU uint32
}

// flagArg is one occurrence of an order-sensitive flag.
type flagArg struct{ name, value string }

// seqFlag records a repeatable flag with the others sharing seq, in
// command-line order: a --lan-addr belongs to the --lan before it.
type seqFlag struct {
	name string
	seq  *[]flagArg
}

func (f seqFlag) String() string { return "" }
func (f seqFlag) Set(v string) error {
	*f.seq = append(*f.seq, flagArg{f.name, v})
	return nil
}

// gatewayFlags are the raw gateway flags, validated by apply.
type gatewayFlags struct {
	lans           []flagArg // --lan and --lan-addr in order
	tuns, tunAddrs multi
	tunMTU         uint
	clamp          bool
}

// registerGatewayFlags adds --lan, --lan-addr, --tun, --tun-addr,
// --tun-mtu and --clamp-mss to fs.
func registerGatewayFlags(fs *flag.FlagSet) *gatewayFlags {
	g := &gatewayFlags{}
	fs.Var(seqFlag{"lan", &g.lans}, "lan", "a NIC toward a protected network, afpacket:IFACE or tap:NAME (repeatable; turns forwarding on)")
	fs.Var(seqFlag{"lan-addr", &g.lans}, "lan-addr", "an address of the stack, `CIDR`, on the --lan given before it (repeatable; each --lan needs one)")
	fs.Var(&g.tuns, "tun", "an L3 TUN device `NAME` in the host (created if missing): host programs reach the far side through it (turns forwarding on)")
	fs.Var(&g.tunAddrs, "tun-addr", "an address of the stack, `CIDR`, on the --tun device (repeatable; the host side takes another address of that prefix)")
	fs.UintVar(&g.tunMTU, "tun-mtu", 0, "MTU `N` of the --tun device (default: the --link MTU less the IPsec reserve)")
	fs.BoolVar(&g.clamp, "clamp-mss", false, "lower the MSS of forwarded TCP SYNs to what fits the path after IPsec (needs --lan or --tun)")
	return g
}

// parseLinkArg parses afpacket:IFACE or tap:NAME of flag name.
func parseLinkArg(name, v string) (kind, ifname string, err error) {
	kind, ifname, ok := strings.Cut(v, ":")
	if !ok || (kind != "afpacket" && kind != "tap") || ifname == "" {
		return "", "", fmt.Errorf("%s %q: want afpacket:IFACE or tap:NAME", name, v)
	}
	if err := checkIfName(ifname); err != nil {
		return "", "", fmt.Errorf("%s %q: %v", name, v, err)
	}
	return kind, ifname, nil
}

func checkIfName(n string) error {
	if len(n) == 0 || len(n) >= 16 || strings.ContainsAny(n, "/ \t%:") {
		return fmt.Errorf("%q is not a valid interface name", n)
	}
	return nil
}

// parseStackAddr parses an address of the stack with its on-link prefix.
func parseStackAddr(name, a string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(a)
	if err != nil {
		return p, fmt.Errorf("%s %q: want an address with its prefix length, like 192.0.2.1/24 or 2001:db8::1/64", name, a)
	}
	if p.Addr().Zone() != "" || p.Addr().IsUnspecified() || p.Addr().IsMulticast() {
		return p, fmt.Errorf("%s %q: not a unicast address", name, a)
	}
	return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()), nil
}

// apply validates the gateway flags into c (whose link and routes are
// parsed): the sides, forwarding, and the NIC of each --route dev=NAME.
func (g *gatewayFlags) apply(c *runConfig) error {
	for _, a := range g.lans {
		switch a.name {
		case "lan":
			kind, name, err := parseLinkArg("--lan", a.value)
			if err != nil {
				return err
			}
			c.LANs = append(c.LANs, lanSpec{Kind: kind, Name: name})
		case "lan-addr":
			if len(c.LANs) == 0 {
				return fmt.Errorf("--lan-addr %q: no --lan before it (each --lan-addr belongs to the --lan it follows)", a.value)
			}
			p, err := parseStackAddr("--lan-addr", a.value)
			if err != nil {
				return err
			}
			l := &c.LANs[len(c.LANs)-1]
			l.Addrs = append(l.Addrs, p)
		}
	}
	for _, l := range c.LANs {
		if len(l.Addrs) == 0 {
			return fmt.Errorf("--lan %s:%s: no --lan-addr after it (the stack needs an address on each LAN)", l.Kind, l.Name)
		}
	}
	switch {
	case len(g.tuns) > 1:
		return fmt.Errorf("--tun given %d times: one TUN device per daemon", len(g.tuns))
	case len(g.tuns) == 0 && len(g.tunAddrs) > 0:
		return fmt.Errorf("--tun-addr %q without --tun", g.tunAddrs[0])
	case len(g.tuns) == 0 && g.tunMTU != 0:
		return fmt.Errorf("--tun-mtu without --tun")
	case len(g.tuns) == 1:
		if err := checkIfName(g.tuns[0]); err != nil {
			return fmt.Errorf("--tun: %v", err)
		}
		t := &tunSpec{Name: g.tuns[0]}
		if len(g.tunAddrs) == 0 {
			return fmt.Errorf("--tun %s: no --tun-addr (the stack needs an address on the TUN for its ICMP errors)", t.Name)
		}
		v6 := false
		for _, a := range g.tunAddrs {
			p, err := parseStackAddr("--tun-addr", a)
			if err != nil {
				return err
			}
			v6 = v6 || p.Addr().Is6()
			t.Addrs = append(t.Addrs, p)
		}
		if g.tunMTU != 0 && (g.tunMTU < 576 || g.tunMTU > 65535 || v6 && g.tunMTU < 1280) {
			return fmt.Errorf("--tun-mtu %d: want 576 to 65535 (1280 or more with an IPv6 --tun-addr)", g.tunMTU)
		}
		t.MTU = uint32(g.tunMTU)
		c.Tun = t
	}
	c.Forwarding = len(c.LANs) > 0 || c.Tun != nil
	if g.clamp && !c.Forwarding {
		return fmt.Errorf("--clamp-mss: applies to forwarded TCP; give --lan or --tun")
	}
	c.ClampMSS = g.clamp

	// Interface names: one side each.
	names := c.sideNames()
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			return fmt.Errorf("interface %q given as two sides (--link, --lan, --tun)", n)
		}
		seen[n] = true
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.Dev == "" {
			continue
		}
		for j, n := range names {
			if n == r.Dev {
				r.NIC = j + 1
			}
		}
		if r.NIC == 0 {
			return fmt.Errorf("--route %v: dev=%s is neither the --link nor a --lan or --tun interface", r.Dst, r.Dev)
		}
	}
	return nil
}

// sideNames are the interface names of the stack's NICs in NIC ID order:
// --link (1), the --lan flags (2, 3, ...), then --tun.
func (c *runConfig) sideNames() []string {
	names := []string{c.LinkName}
	for _, l := range c.LANs {
		names = append(names, l.Name)
	}
	if c.Tun != nil {
		names = append(names, c.Tun.Name)
	}
	return names
}

// openEthernet opens an afpacket or tap link.
func openEthernet(kind, name string, mtu uint32, udpGSO bool) (gstack.LinkEndpoint, error) {
	if kind == "tap" {
		return tap.Open(name, tap.Options{MTU: mtu, UDPSegmentation: udpGSO})
	}
	// RX checksum offload: veth (and other virtual links) hand us frames
	// with partial checksums; real NICs have verified them.
	return afpacket.Open(name, afpacket.Options{MTU: mtu, RXChecksumOffload: true, UDPSegmentation: udpGSO})
}

// openSides opens the --lan links and the --tun device, in NIC ID order.
// wireMTU is the WAN link's, from which the TUN's default MTU follows. On
// error, what was opened is closed again.
func openSides(c *runConfig, wireMTU uint32, log *slog.Logger) (nics []stack.NIC, err error) {
	defer func() {
		if err != nil {
			for _, n := range nics {
				n.Link.Close()
			}
			nics = nil
		}
	}()
	for _, l := range c.LANs {
		ep, err := openEthernet(l.Kind, l.Name, 0, false)
		if err != nil {
			return nics, fmt.Errorf("--lan %s:%s: %w", l.Kind, l.Name, err)
		}
		nics = append(nics, stack.NIC{Link: ep, Addrs: l.Addrs})
		log.Info("lan up", "link", l.Kind+":"+l.Name, "mtu", ep.MTU(), "addrs", fmt.Sprint(l.Addrs))
	}
	if t := c.Tun; t != nil {
		mtu := t.MTU
		if mtu == 0 {
			mtu = tunMTUFor(wireMTU)
		}
		ep, err := tun.Open(t.Name, tun.Options{MTU: mtu})
		if err != nil {
			return nics, fmt.Errorf("--tun %s: %w", t.Name, err)
		}
		nics = append(nics, stack.NIC{Link: ep, Addrs: t.Addrs, L3: true})
		log.Info("tun up", "dev", t.Name, "mtu", ep.MTU(), "addrs", fmt.Sprint(t.Addrs))
	}
	return nics, nil
}

// tunMTUFor is the default TUN MTU over a WAN link of wire MTU: what is
// left after the stack's IPsec reserve, at least IPv6's 1280 (larger
// packets then get Packet Too Big from the stack).
func tunMTUFor(wire uint32) uint32 {
	return max(1280, wire-min(wire, stack.DefaultOverheadReserve))
}
