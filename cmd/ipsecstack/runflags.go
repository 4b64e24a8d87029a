package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ipsecstack/ipsecstack/control"
	"github.com/ipsecstack/ipsecstack/ike/exchange"
)

// runConfig is the parsed and validated command line of `ipsecstack run`.
type runConfig struct {
	LinkKind string // "afpacket" or "tap"
	LinkName string
	Addrs    []netip.Prefix
	Routes   []routeSpec
	MTU      uint32
	// UDPGSO sends runs of UDP datagrams of one flow and size (ESP in
	// UDP) as UDP GSO frames on the --link.
	UDPGSO  bool
	Setkey  string
	Control string
	Echo    []echoSpec
	Discard []echoSpec // --discard: RFC 863 sinks inside the stack
	Forward []forwardSpec
	Publish []publishSpec
	// ForwardLimits bound every --forward listener.
	ForwardLimits forwardLimits
	// NATKeepalive is the NAT keepalive interval of the setkey file's
	// UDP-encapsulated SAs sent from the stack's addresses; 0: none.
	NATKeepalive time.Duration
	Pcap         string
	Keylog       string
	// IKE is the --ike file (swanctl.conf syntax): IKEv2 connections the
	// stack keys itself with.
	IKE string
	// IKERetransmit is the IKE request retransmission schedule
	// (--ike-retransmit; zero: strongSwan's 4 s x 1.8, 5 tries).
	IKERetransmit exchange.Retransmit
	Metrics       string
	// Pprof is the address of net/http/pprof (--pprof); empty: off.
	Pprof    string
	LogLevel slog.Level
	// The gateway sides (gateway.go): --lan NICs, a --tun device, and
	// forwarding between them and --link, on when either is given.
	LANs       []lanSpec
	Tun        *tunSpec
	Forwarding bool
	ClampMSS   bool
}

// routeSpec is --route PREFIX=GATEWAY[,src=ADDR][,dev=NAME]; an empty
// gateway is an on-link route, src the preferred source address (gVisor's
// SourceHint), dev the interface of the side it leaves by (NIC its ID;
// without dev, the side whose on-link prefix holds the gateway, else
// --link).
type routeSpec struct {
	Dst     netip.Prefix
	Gateway netip.Addr
	Src     netip.Addr
	Dev     string
	NIC     int
}

// echoSpec is --echo tcp:PORT or udp:PORT.
type echoSpec struct {
	Proto string
	Port  uint16
}

// forwardSpec is --forward tcp:LISTENADDR:PORT=STACKADDR:PORT (or udp:…):
// a listener on the host whose connections (datagrams) go to To inside the
// stack.
type forwardSpec struct {
	Proto  string
	Listen string // host:port for net.Listen
	To     netip.AddrPort
}

func (f forwardSpec) String() string {
	return fmt.Sprintf("%s:%s=%s", f.Proto, f.Listen, f.To)
}

// publishSpec is --publish tcp:STACKPORT=HOSTADDR:PORT (or udp:…): a
// listener inside the stack, on every stack address, whose connections
// (datagrams) go to To on the host: the reverse of a forwardSpec.
type publishSpec struct {
	Proto string
	Port  uint16 // the stack port
	To    string // host:port for net.Dial
}

func (p publishSpec) String() string {
	return fmt.Sprintf("%s:%d=%s", p.Proto, p.Port, p.To)
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

const runUsage = `usage: ipsecstack run --link afpacket:IFACE|tap:NAME --addr CIDR [--addr CIDR]...
        [--lan afpacket:IFACE|tap:NAME --lan-addr CIDR [--lan-addr CIDR]...]...
        [--tun NAME --tun-addr CIDR [--tun-addr CIDR]... [--tun-mtu N]] [--clamp-mss]
        [--route PREFIX=GATEWAY[,src=ADDR][,dev=NAME]]... [--mtu N] [--udp-gso=false] [--setkey FILE]
        [--control PATH] [--echo tcp:PORT] [--echo udp:PORT]
        [--discard tcp:PORT] [--discard udp:PORT]
        [--forward tcp|udp:LISTENADDR:PORT=STACKADDR:PORT]...
        [--publish tcp|udp:STACKPORT=HOSTADDR:PORT]...
        [--forward-max-sessions N] [--forward-idle-timeout DURATION]
        [--nat-keepalive DURATION] [--ike FILE] [--ike-retransmit TIMEOUT,BASE,TRIES] [--pcap FILE] [--keylog FILE] [--metrics ADDR] [--pprof ADDR] [--log-level LEVEL]`

// defaultNATKeepalive is strongSwan's keepalive interval (charon's
// keep_alive, 20 s): with static keys the daemon cannot tell whether a NAT
// is in the way, and a keepalive costs a 29-byte datagram.
const defaultNATKeepalive = 20 * time.Second

// parseRunFlags parses and validates the command line. Every problem is an
// errUsage error with a one-line message; -h is flag.ErrHelp (usage on
// stdout).
func parseRunFlags(args []string, stdout io.Writer) (*runConfig, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var ikeRT string
	var (
		link, setkeyFile, ctl, pcapFile, keylog, metrics, pprofAddr, level, ike string
		mtu, fwdMax                                                             uint
		fwdIdle, natKA                                                          time.Duration
		addrs, routes, echos, discards, forwards, publishes                     multi
	)
	fs.StringVar(&link, "link", "", "the link the stack owns: afpacket:IFACE (an existing interface) or tap:NAME (a TAP device, created if missing)")
	fs.Var(&addrs, "addr", "an address of the stack with its on-link prefix, `CIDR` (repeatable; IPv4 and IPv6)")
	fs.Var(&routes, "route", "a static route `PREFIX=GATEWAY[,src=ADDR][,dev=NAME]` (repeatable; empty GATEWAY: on-link; src: preferred source address; dev: the --link, --lan or --tun interface it leaves by, default the one whose prefix holds GATEWAY, else --link)")
	gw := registerGatewayFlags(fs)
	fs.UintVar(&mtu, "mtu", 0, "link MTU `N` (default: the interface's)")
	udpGSO := fs.Bool("udp-gso", true, "--link: send each run of same-sized UDP datagrams of one flow (ESP in UDP) as one UDP GSO frame, cut by the kernel or the receiving reader; captures on the path see it whole (=false: one frame per datagram)")
	fs.StringVar(&setkeyFile, "setkey", "", "apply this setkey `FILE` (KAME syntax) before the link comes up, all or nothing")
	fs.StringVar(&ctl, "control", control.DefaultPath, "control socket `PATH` (PF_KEY for setkey, JSON for stats and ping)")
	fs.Var(&echos, "echo", "serve echo inside the stack: tcp:PORT or udp:PORT (repeatable)")
	fs.Var(&discards, "discard", "serve discard (RFC 863) inside the stack: tcp:PORT or udp:PORT (repeatable)")
	fs.Var(&publishes, "publish", "publish a host service inside the stack: tcp:STACKPORT=HOSTADDR:PORT or udp:… (repeatable; the stack listens on every address)")
	fs.Var(&forwards, "forward", "forward a host listener into the stack: tcp:LISTENADDR:PORT=STACKADDR:PORT or udp:… (repeatable)")
	fs.UintVar(&fwdMax, "forward-max-sessions", defaultForwardMaxSessions, "at most `N` TCP connections, and N UDP client sessions, at once per --forward (beyond: refused, counted)")
	fs.DurationVar(&fwdIdle, "forward-idle-timeout", defaultForwardIdle, "close a --forward TCP connection or UDP session idle this long (`DURATION`; a UDP session never answered: at most 30s)")
	fs.DurationVar(&natKA, "nat-keepalive", defaultNATKeepalive, "send a NAT keepalive (RFC 3948) every `DURATION` on each esp-udp SA of the --setkey file that leaves from an --addr (0: never)")
	fs.StringVar(&ike, "ike", "", "IKEv2 connections and secrets from this swanctl.conf `FILE`: the stack negotiates its SAs itself (UDP 500/4500 inside the stack)")
	fs.StringVar(&ikeRT, "ike-retransmit", "", "IKE request retransmissions `TIMEOUT,BASE,TRIES` as charon's retransmit_timeout, retransmit_base, retransmit_tries (default 4s,1.8,5); the peer is declared dead after the last")
	fs.StringVar(&pcapFile, "pcap", "", "write the wire side (after IPsec) to this pcap `FILE`")
	fs.StringVar(&keylog, "keylog", "", "write Wireshark esp_sa lines for every SA to `FILE` (mode 0600)")
	fs.StringVar(&metrics, "metrics", "", "serve Prometheus /metrics on `ADDR` (host:port)")
	fs.StringVar(&pprofAddr, "pprof", "", "serve Go's net/http/pprof profiles on `ADDR` (host:port; off by default: profiles show the stack's internals)")
	fs.StringVar(&level, "log-level", "info", "log level: debug, info, warn or error")
	if err := parseFlags(fs, args, runUsage, stdout); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
	}
	c := &runConfig{Setkey: setkeyFile, Control: ctl, Pcap: pcapFile, Keylog: keylog, Metrics: metrics, Pprof: pprofAddr, IKE: ike}

	if link == "" {
		return nil, bad("--link is required (afpacket:IFACE or tap:NAME)")
	}
	kind, name, ok := strings.Cut(link, ":")
	if !ok || (kind != "afpacket" && kind != "tap") || name == "" {
		return nil, bad("--link %q: want afpacket:IFACE or tap:NAME", link)
	}
	if len(name) >= 16 || strings.ContainsAny(name, "/ \t%") {
		return nil, bad("--link %q: %q is not a valid interface name", link, name)
	}
	c.LinkKind, c.LinkName = kind, name
	c.UDPGSO = *udpGSO

	if len(addrs) == 0 {
		return nil, bad("at least one --addr CIDR is required")
	}
	for _, a := range addrs {
		p, err := parseStackAddr("--addr", a)
		if err != nil {
			return nil, bad("%v", err)
		}
		c.Addrs = append(c.Addrs, p)
	}
	for _, r := range routes {
		rs, err := parseRoute(r)
		if err != nil {
			return nil, bad("--route %q: %v", r, err)
		}
		c.Routes = append(c.Routes, rs)
	}
	if err := gw.apply(c); err != nil {
		return nil, bad("%v", err)
	}
	if mtu != 0 && (mtu < 576 || mtu > 65535) {
		return nil, bad("--mtu %d: want 576 to 65535 (1280 or more for IPv6)", mtu)
	}
	c.MTU = uint32(mtu)
	if c.Control == "" {
		return nil, bad("--control: empty path")
	}
	// A stack port serves one of --echo, --discard or --publish.
	stackPorts := map[echoSpec]string{}
	claim := func(flag, arg string, es echoSpec) error {
		this := fmt.Sprintf("%s %q", flag, arg)
		if prev, ok := stackPorts[es]; ok {
			if prev == this {
				return bad("%s given twice", this)
			}
			return bad("%s: stack port %s:%d is already taken by %s", this, es.Proto, es.Port, prev)
		}
		stackPorts[es] = this
		return nil
	}
	for _, e := range echos {
		es, ok := parseStackPort(e)
		if !ok {
			return nil, bad("--echo %q: want tcp:PORT or udp:PORT (port 1-65535)", e)
		}
		if err := claim("--echo", e, es); err != nil {
			return nil, err
		}
		c.Echo = append(c.Echo, es)
	}
	for _, e := range discards {
		es, ok := parseStackPort(e)
		if !ok {
			return nil, bad("--discard %q: want tcp:PORT or udp:PORT (port 1-65535)", e)
		}
		if err := claim("--discard", e, es); err != nil {
			return nil, err
		}
		c.Discard = append(c.Discard, es)
	}
	for _, p := range publishes {
		ps, err := parsePublish(p)
		if err != nil {
			return nil, bad("--publish %q: %v", p, err)
		}
		if err := claim("--publish", p, echoSpec{ps.Proto, ps.Port}); err != nil {
			return nil, err
		}
		c.Publish = append(c.Publish, ps)
	}
	for _, f := range forwards {
		fw, err := parseForward(f)
		if err != nil {
			return nil, bad("--forward %q: %v", f, err)
		}
		c.Forward = append(c.Forward, fw)
	}
	if fwdMax == 0 || fwdMax > 1<<20 {
		return nil, bad("--forward-max-sessions %d: want 1 to %d", fwdMax, 1<<20)
	}
	if fwdIdle < time.Second || fwdIdle > 24*time.Hour {
		return nil, bad("--forward-idle-timeout %v: want 1s to 24h", fwdIdle)
	}
	c.ForwardLimits = forwardLimits{MaxSessions: int(fwdMax), Idle: fwdIdle}
	if natKA != 0 && (natKA < time.Second || natKA > time.Hour) {
		return nil, bad("--nat-keepalive %v: want 0 (never) or 1s to 1h", natKA)
	}
	c.NATKeepalive = natKA
	if ikeRT != "" {
		rt, err := parseRetransmit(ikeRT)
		if err != nil {
			return nil, bad("--ike-retransmit %q: %v", ikeRT, err)
		}
		c.IKERetransmit = rt
	}
	if c.Metrics != "" {
		if _, port, err := net.SplitHostPort(c.Metrics); err != nil || port == "" {
			return nil, bad("--metrics %q: want HOST:PORT (e.g. 127.0.0.1:9101 or :9101)", c.Metrics)
		}
	}
	if c.Pprof != "" {
		if _, port, err := net.SplitHostPort(c.Pprof); err != nil || port == "" {
			return nil, bad("--pprof %q: want HOST:PORT (e.g. 127.0.0.1:6060)", c.Pprof)
		}
	}
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return nil, bad("--log-level %q: want debug, info, warn or error", level)
	}
	for _, p := range []struct{ flag, v string }{{"--pcap", c.Pcap}, {"--keylog", c.Keylog}, {"--setkey", c.Setkey}, {"--ike", c.IKE}} {
		if p.v == "" && flagGiven(fs, p.flag[2:]) {
			return nil, bad("%s: empty file name", p.flag)
		}
	}
	if c.Pcap != "" && c.Pcap == c.Keylog {
		return nil, bad("--pcap and --keylog name the same file")
	}
	return c, nil
}

func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			given = true
		}
	})
	return given
}

func parseRoute(s string) (routeSpec, error) {
	var r routeSpec
	rest, opts, _ := strings.Cut(s, ",")
	dst, gw, ok := strings.Cut(rest, "=")
	if !ok {
		return r, errors.New("want PREFIX=GATEWAY[,src=ADDR][,dev=NAME] (GATEWAY may be empty for an on-link route)")
	}
	p, err := netip.ParsePrefix(dst)
	if err != nil {
		return r, fmt.Errorf("bad prefix %q", dst)
	}
	r.Dst = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked()
	if gw != "" {
		a, err := netip.ParseAddr(gw)
		if err != nil || a.Zone() != "" {
			return r, fmt.Errorf("bad gateway %q", gw)
		}
		r.Gateway = a.Unmap()
		if r.Gateway.Is4() != r.Dst.Addr().Is4() {
			return r, errors.New("prefix and gateway are of different families")
		}
	}
	for _, opt := range strings.Split(opts, ",") {
		if opt == "" && opts == "" {
			break
		}
		if dev, ok := strings.CutPrefix(opt, "dev="); ok && r.Dev == "" {
			if err := checkIfName(dev); err != nil {
				return r, fmt.Errorf("dev: %v", err)
			}
			r.Dev = dev
			continue
		}
		v, ok := strings.CutPrefix(opt, "src=")
		if !ok || r.Src.IsValid() {
			return r, fmt.Errorf("bad %q: want src=ADDR or dev=NAME, each at most once", opt)
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			return r, fmt.Errorf("bad %q: want src=ADDR", opt)
		}
		r.Src = a.Unmap()
		if r.Src.Is4() != r.Dst.Addr().Is4() {
			return r, errors.New("prefix and src are of different families")
		}
	}
	return r, nil
}

func parseForward(s string) (forwardSpec, error) {
	var f forwardSpec
	proto, rest, ok := strings.Cut(s, ":")
	if !ok || (proto != "tcp" && proto != "udp") {
		return f, errors.New("want tcp:LISTENADDR:PORT=STACKADDR:PORT (or udp:…)")
	}
	listen, to, ok := strings.Cut(rest, "=")
	if !ok {
		return f, errors.New("missing =STACKADDR:PORT")
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return f, fmt.Errorf("listen address %q: want HOST:PORT ([v6addr]:PORT for IPv6, :PORT for all)", listen)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return f, fmt.Errorf("listen port %q: want 1-65535", port)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return f, fmt.Errorf("listen address %q is not an IP address", host)
		}
	}
	ap, err := netip.ParseAddrPort(to)
	if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
		return f, fmt.Errorf("stack address %q: want ADDR:PORT ([v6addr]:PORT for IPv6)", to)
	}
	if ap.Addr().IsUnspecified() {
		return f, fmt.Errorf("stack address %q is unspecified", to)
	}
	f.Proto, f.Listen, f.To = proto, listen, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return f, nil
}

// parseStackPort parses tcp:PORT or udp:PORT (port 1-65535).
func parseStackPort(s string) (echoSpec, bool) {
	proto, port, ok := strings.Cut(s, ":")
	n, err := strconv.ParseUint(port, 10, 16)
	if !ok || (proto != "tcp" && proto != "udp") || err != nil || n == 0 {
		return echoSpec{}, false
	}
	return echoSpec{proto, uint16(n)}, true
}

func parsePublish(s string) (publishSpec, error) {
	var p publishSpec
	proto, rest, ok := strings.Cut(s, ":")
	if !ok || (proto != "tcp" && proto != "udp") {
		return p, errors.New("want tcp:STACKPORT=HOSTADDR:PORT (or udp:…)")
	}
	port, to, ok := strings.Cut(rest, "=")
	if !ok {
		return p, errors.New("missing =HOSTADDR:PORT")
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return p, fmt.Errorf("stack port %q: want 1-65535", port)
	}
	ap, err := netip.ParseAddrPort(to)
	if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
		return p, fmt.Errorf("host address %q: want ADDR:PORT ([v6addr]:PORT for IPv6)", to)
	}
	if ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() {
		return p, fmt.Errorf("host address %q is not a unicast address", to)
	}
	p.Proto, p.Port, p.To = proto, uint16(n), netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	return p, nil
}

// parseRetransmit reads --ike-retransmit TIMEOUT,BASE,TRIES: charon's
// retransmit_timeout (100ms to 1m), retransmit_base (1 to 10) and
// retransmit_tries (1 to 20).
func parseRetransmit(v string) (exchange.Retransmit, error) {
	f := strings.Split(v, ",")
	if len(f) != 3 {
		return exchange.Retransmit{}, errors.New("want TIMEOUT,BASE,TRIES (e.g. 4s,1.8,5)")
	}
	to, err := time.ParseDuration(f[0])
	if err != nil || to < 100*time.Millisecond || to > time.Minute {
		return exchange.Retransmit{}, errors.New("TIMEOUT: want a duration from 100ms to 1m")
	}
	base, err := strconv.ParseFloat(f[1], 64)
	if err != nil || base < 1 || base > 10 {
		return exchange.Retransmit{}, errors.New("BASE: want a number from 1 to 10")
	}
	tries, err := strconv.Atoi(f[2])
	if err != nil || tries < 1 || tries > 20 {
		return exchange.Retransmit{}, errors.New("TRIES: want 1 to 20")
	}
	return exchange.Retransmit{Timeout: to, Base: base, Tries: tries}, nil
}
