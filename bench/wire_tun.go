package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The --tun contender: ipsecstack as wireguard-go is used, a TUN device
// per namespace that the host's own programs route through, so the
// sending and the receiving TCP are the kernel's on both sides (no
// --forward or --publish relay) and the daemons forward between their TUN
// and the veth, with ESP aes-gcm-128 tunnel mode between the TUN subnets.

// tunContenders are the rows beside wireguard-go's: ESP, and ESP in UDP
// (port 4500, with UDP GSO on the veth) as wireguard-go's UDP and the
// strongSwan row's encapsulation.
func tunContenders(ipsecstack string) []*wireContender {
	return []*wireContender{
		{id: "tun-gcm-tunnel", name: "ipsecstack --tun (TUN), ESP aes-gcm-128 tunnel, kernel TCP",
			group: "ipsecstack", suite: "aes-gcm-128 tunnel", setup: setupIpsecstackTun(ipsecstack, false)},
		{id: "tun-gcm-udp", name: "ipsecstack --tun (TUN), ESP aes-gcm-128 UDP-encap tunnel (UDP GSO), kernel TCP",
			group: "ipsecstack", suite: "aes-gcm-128 tunnel udp-gso", setup: setupIpsecstackTun(ipsecstack, true)},
	}
}

// tunSetkey is one gateway's setkey file: the SA pair between the veth
// addresses (ESP in UDP 4500 with udp) and the out, in and fwd policies
// between the TUN subnets.
func tunSetkey(alg espSuite, k1, k2, a, b, netA, netB string, me int, udp bool) string {
	var s strings.Builder
	s.WriteString("flush;\nspdflush;\n")
	proto, pa, pb := "esp", a, b
	if udp {
		proto, pa, pb = "esp-udp", a+"[4500]", b+"[4500]"
	}
	fmt.Fprintf(&s, "add %s %s %s 0x1001 -m tunnel -r 128 -E %s %s;\n", pa, pb, proto, alg.name, k1)
	fmt.Fprintf(&s, "add %s %s %s 0x1002 -m tunnel -r 128 -E %s %s;\n", pb, pa, proto, alg.name, k2)
	self, peer, sNet, pNet := a, b, netA, netB
	if me == 1 {
		self, peer, sNet, pNet = b, a, netB, netA
	}
	fmt.Fprintf(&s, "spdadd %s %s any -P out ipsec esp/tunnel/%s-%s/require;\n", sNet, pNet, self, peer)
	for _, dir := range []string{"in", "fwd"} {
		fmt.Fprintf(&s, "spdadd %s %s any -P %s ipsec esp/tunnel/%s-%s/require;\n", pNet, sNet, dir, peer, self)
	}
	return s.String()
}

// setupIpsecstackTun: in each namespace a daemon on its veth end
// (AF_PACKET) with a TUN device; the host gives the TUN its address and a
// route to the other side's TUN subnet through it, as with wireguard-go.
func setupIpsecstackTun(bin string, udp bool) func(e *wireEnv, c *wireContender, idx int) error {
	return func(e *wireEnv, c *wireContender, idx int) error {
		a, b := fmt.Sprintf("10.77.%d.1", idx), fmt.Sprintf("10.77.%d.2", idx)
		nsA, nsB, vA, vB, err := e.vethPair(c, "", "")
		if err != nil {
			return err
		}
		nets := [2]string{fmt.Sprintf("10.91.%d.0/24", idx), fmt.Sprintf("10.92.%d.0/24", idx)}
		hosts := [2]string{fmt.Sprintf("10.91.%d.1", idx), fmt.Sprintf("10.92.%d.1", idx)}
		stacks := [2]string{fmt.Sprintf("10.91.%d.254/24", idx), fmt.Sprintf("10.92.%d.254/24", idx)}
		alg := wireESP["aes-gcm-128"]
		k1, k2 := randHex(alg.keyLen), randHex(alg.keyLen)
		dir := filepath.Join(e.dir, fmt.Sprintf("c%d", idx))
		os.MkdirAll(dir, 0o700)
		nss, links, addrs := [2]string{nsA, nsB}, [2]string{vA, vB}, [2]string{a, b}
		for i := range 2 {
			conf, err := e.writeFile(fmt.Sprintf("c%d/T%c.conf", idx, 'A'+i), tunSetkey(alg, k1, k2, a, b, nets[0], nets[1], i, udp), 0o600)
			if err != nil {
				return err
			}
			ctl := filepath.Join(dir, fmt.Sprintf("T%c.sock", 'A'+i))
			tun := e.ifName("wtn")
			args := []string{bin, "run", "--link", "afpacket:" + links[i], "--addr", addrs[i] + "/24",
				"--tun", tun, "--tun-addr", stacks[i], "--route", nets[1-i] + "=" + addrs[1-i],
				"--setkey", conf, "--control", ctl, "--log-level", "warn"}
			if e.pprofDir != "" {
				args = append(args, "--pprof", wirePprofAddr)
			}
			p, err := e.start(fmt.Sprintf("%s daemon %c", c.name, 'A'+i), nss[i], false, nil, args...)
			if err != nil {
				return err
			}
			c.procs = append(c.procs, p)
			if err := waitControl(p, ctl); err != nil {
				return err
			}
			c.controls = append(c.controls, ctl)
			if e.pprofDir != "" {
				c.pprofDir = e.pprofDir
				c.pprofNS = append(c.pprofNS, nss[i])
			}
			if err := e.sh("ip", "-n", nss[i], "addr", "add", hosts[i]+"/24", "dev", tun); err != nil {
				return err
			}
			if err := e.sh("ip", "-n", nss[i], "route", "add", nets[1-i], "dev", tun, "src", hosts[i]); err != nil {
				return err
			}
			c.ifaces = append(c.ifaces, [2]string{nss[i], tun})
		}
		c.tcpTo, c.udpTo, c.src = fmt.Sprintf("%s:%d", hosts[1], wireTCPPort), fmt.Sprintf("%s:%d", hosts[1], wireUDPPort), hosts[0]
		c.retransSource = "kernel TCP, /proc/net/snmp RetransSegs in the sender's namespace"
		return e.startPrograms(c, nsA, nsB, hosts[1])
	}
}
