package main

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/ike/swanctl"
)

// runIKECheck is `ipsecstack ike check FILE`: it loads a swanctl.conf as
// `ipsecstack run --ike FILE` will (includes, certificates, the key and CA
// directories next to it) and prints the connections as parsed, or the
// first error as "file:line: what". Exit status 0, 2 on any error.
func runIKECheck(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: ipsecstack ike check FILE (a swanctl.conf)")
		return 2
	}
	cfg, err := swanctl.Load(args[0])
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	printIKEConfig(stdout, cfg)
	return 0
}

func printIKEConfig(w io.Writer, cfg *config.Config) {
	for _, c := range cfg.Connections {
		fmt.Fprintf(w, "%s: IKEv2 (%s), local %s port %d, remote %s port %d\n", c.Name, c.Pos,
			addrs(c.LocalAddrs), c.LocalPort, addrs(c.RemoteAddrs), c.RemotePort)
		for _, p := range c.Proposals {
			fmt.Fprintf(w, "  proposal %s\n", swanctl.ProposalString(p))
		}
		fmt.Fprintf(w, "  rekey %v, over %v, rand %v, dpd %v, encap %v, keyingtries %d\n",
			c.RekeyTime, c.OverTime, c.RandTime, c.DPDDelay, c.Encap, c.KeyingTries)
		for _, side := range []struct {
			name  string
			auths []*config.Auth
		}{{"local", c.Local}, {"remote", c.Remote}} {
			for _, a := range side.auths {
				method := "pubkey"
				if a.Method == config.AuthPSK {
					method = "psk"
				}
				fmt.Fprintf(w, "  %s: auth %s, id %s", side.name, method, swanctl.IDString(a.ID))
				if len(a.Certs) > 0 {
					fmt.Fprintf(w, ", cert %q", a.Certs[0].Subject.String())
				}
				if a.Key != nil {
					fmt.Fprint(w, ", private key loaded")
				}
				fmt.Fprintln(w)
			}
		}
		for _, ch := range c.Children {
			fmt.Fprintf(w, "  child %s: %s, local %s, remote %s, rekey %v, life %v\n", ch.Name, ch.Mode,
				tsList(ch.LocalTS), tsList(ch.RemoteTS), ch.RekeyTime, ch.LifeTime)
			for _, p := range ch.Proposals {
				fmt.Fprintf(w, "    esp proposal %s\n", swanctl.ProposalString(p))
			}
		}
	}
	fmt.Fprintf(w, "%d connections, %d secrets, %d authorities\n", len(cfg.Connections), len(cfg.Secrets), len(cfg.Authorities))
}

func addrs(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "%any"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		if p.IsSingleIP() {
			s[i] = p.Addr().String()
		} else {
			s[i] = p.String()
		}
	}
	return strings.Join(s, ",")
}

func tsList(ts []message.TrafficSelector) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = swanctl.TSString(t)
	}
	return strings.Join(s, ",")
}
