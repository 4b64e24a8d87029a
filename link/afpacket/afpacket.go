//go:build linux

// Package afpacket binds a gVisor stack to an existing Linux network
// interface through AF_PACKET sockets, using gVisor's fdbased endpoint with
// Ethernet framing.
//
// The stack reuses the interface's MAC (unless Options.Address says
// otherwise), so the host kernel's side of the interface should have no
// address on the stack's subnets, and IPv6 disabled
// (net.ipv6.conf.IFACE.disable_ipv6=1): otherwise both stacks answer.
package afpacket

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/internal/fdlink"
)

// Options configures Open.
type Options struct {
	// MTU is the IP MTU; 0 means the interface's MTU.
	MTU uint32
	// Address is the stack's MAC; empty means the interface's own. A
	// different MAC needs Promiscuous, since the NIC filters by MAC.
	Address tcpip.LinkAddress
	// RXChecksumOffload tells the stack not to verify received checksums.
	// Set it on veth: frames the host kernel sends there carry partial
	// (not yet computed) TCP/UDP checksums.
	RXChecksumOffload bool
	// Promiscuous puts the interface in promiscuous mode for as long as the
	// endpoint is open (PACKET_MR_PROMISC membership, which the kernel
	// drops with the socket).
	Promiscuous bool
	// Sockets is the number of AF_PACKET sockets, joined in a
	// PACKET_FANOUT_HASH group so that the kernel spreads flows over them
	// (one reader goroutine each); 0 means 1. fdbased already spreads one
	// socket's frames over GOMAXPROCS goroutines, so 1 is usually enough.
	Sockets int
	// RcvBuf and SndBuf size each socket's receive and send buffers in
	// bytes; 0 means DefaultSocketBuffer. See DefaultSocketBuffer.
	RcvBuf, SndBuf int
	// ClosedFunc, if set, is called when a reader stops, with the error
	// that stopped it (nil when stopped by Close or NIC removal).
	ClosedFunc func(tcpip.Error)
	// UDPSegmentation sends each run of UDP datagrams of one flow and one
	// size (ESP in UDP: the IPsec wrapper seals a TCP super-segment into
	// such a run) as one UDP GSO frame, which the kernel carries as one
	// packet as far as it can (through a veth whole; cut at a kernel
	// socket, at a device without the offload, or by a reader with
	// PACKET_VNET_HDR such as ours). A capture on the path sees the
	// frame whole, as it sees the kernel's TSO frames, so tools that
	// dissect ESP per datagram (tshark's ICV check) see only its first.
	UDPSegmentation bool
}

// DefaultSocketBuffer is the default receive and send buffer of each
// AF_PACKET socket: 4 MiB. The kernel's default (net.core.rmem_default,
// 208 KiB: about 140 full-size frames, as a frame costs its truesize of
// some 1.5 KiB or more) overflows whenever the reader goroutine is not
// scheduled for a millisecond at a few hundred MB/s, and every dropped
// frame costs TCP a retransmission (or a timeout). 4 MiB holds some 20 ms
// at 200 MB/s: the bandwidth-delay product of a busy two-core host. It is
// set with SO_RCVBUFFORCE/SO_SNDBUFFORCE (CAP_NET_ADMIN), which may exceed
// net.core.rmem_max/wmem_max; without the capability, with SO_RCVBUF and
// SO_SNDBUF, which the kernel caps at those sysctls.
const DefaultSocketBuffer = 4 << 20

// Stats are the kernel's counters of the endpoint's sockets, summed over
// the sockets since Open (PACKET_STATISTICS, which the kernel resets on
// every read).
type Stats struct {
	// Received counts the frames that reached the sockets, dropped ones
	// included (tp_packets).
	Received uint64
	// Dropped counts the frames the kernel dropped because a socket's
	// receive buffer was full (tp_drops): lost before the stack saw them.
	Dropped uint64
}

// Endpoint is the link endpoint Open returns.
type Endpoint struct {
	*fdlink.Endpoint

	statsMu sync.Mutex
	stats   Stats
}

// Stats returns the kernel's counters of the endpoint's sockets, read now;
// after Close, the last counters read.
func (e *Endpoint) Stats() Stats {
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	e.Control(func(fds []int) {
		for _, fd := range fds {
			st, err := unix.GetsockoptTpacketStats(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
			if err != nil {
				continue // cannot fail on a packet socket
			}
			// The kernel's tp_packets already includes tp_drops.
			e.stats.Received += uint64(st.Packets)
			e.stats.Dropped += uint64(st.Drops)
		}
	})
	return e.stats
}

// KernelDrops returns Stats().Dropped: the frames lost to full socket
// receive buffers since Open.
func (e *Endpoint) KernelDrops() uint64 { return e.Stats().Dropped }

// Open binds to the interface named ifname. The returned endpoint, an
// *Endpoint, closes its sockets on Close (which stack.RemoveNIC and
// Stack.Destroy call).
func Open(ifname string, opts Options) (stack.LinkEndpoint, error) {
	wrap := func(what string, err error) error {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return fmt.Errorf("afpacket: interface %q: %s: %w (needs root or CAP_NET_RAW)", ifname, what, err)
		}
		return fmt.Errorf("afpacket: interface %q: %s: %w", ifname, what, err)
	}
	ifc, err := lookup(ifname)
	if err != nil {
		return nil, fmt.Errorf("afpacket: interface %q: %w", ifname, err)
	}
	if len(ifc.HardwareAddr) != 6 {
		return nil, fmt.Errorf("afpacket: interface %q: not an Ethernet interface (hardware address %q)", ifname, ifc.HardwareAddr)
	}
	mtu := opts.MTU
	if mtu == 0 {
		mtu = uint32(ifc.MTU)
	}
	mac := opts.Address
	if mac == "" {
		mac = tcpip.LinkAddress(ifc.HardwareAddr)
	}
	n := opts.Sockets
	if n <= 0 {
		n = 1
	}

	var fds []int
	fail := func(err error) (stack.LinkEndpoint, error) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, err
	}
	for i := 0; i < n; i++ {
		fd, err := openSocket(ifc.Index, n > 1, bufSize(opts.RcvBuf), bufSize(opts.SndBuf))
		if fd >= 0 {
			fds = append(fds, fd)
		}
		if err != nil {
			return fail(wrap("AF_PACKET socket", err))
		}
	}
	if n > 1 {
		if err := joinFanout(fds); err != nil {
			return fail(wrap("PACKET_FANOUT", err))
		}
	}
	if opts.Promiscuous {
		mreq := unix.PacketMreq{Ifindex: int32(ifc.Index), Type: unix.PACKET_MR_PROMISC}
		if err := unix.SetsockoptPacketMreq(fds[0], unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
			return fail(wrap("promiscuous mode", err))
		}
	}

	isPacket := make([]bool, n)
	for i := range isPacket {
		isPacket[i] = true
	}
	ep, err := fdlink.NewFDBased(&fdbased.Options{
		FDs:               fds,
		MTU:               mtu,
		EthernetHeader:    true,
		Address:           mac,
		GSOMaxSize:        0, // IPsec must see (and checksum) every segment
		ClosedFunc:        opts.ClosedFunc,
		RXChecksumOffload: opts.RXChecksumOffload,
		// RecvMMsg reads up to 8 frames a syscall; its dispatcher also
		// skips frames for other MACs where the Readv one stops reading.
		PacketDispatchMode: fdbased.RecvMMsg,
		// Deliver on the reader goroutine. fdbased's default (GOMAXPROCS
		// processor goroutines per socket) hands every batch to another
		// goroutine, which costs a wake-up per batch and gains nothing
		// for ESP, whose packets all hash to one processor (the SPI is
		// where the ports would be): two daemons over a veth took 9%
		// less CPU and time for the same transfer. Sockets > 1 still
		// reads in parallel.
		ProcessorsPerChannel: 1,
		InterfaceIndex:       ifc.Index,
		// We did the socket setup (fanout with IGNORE_OUTGOING) ourselves;
		// fdbased's own fanout group would drop that flag.
		PreConfigured:  true,
		IsPacketSocket: isPacket,
	})
	if err != nil {
		return fail(wrap("fdbased endpoint", err))
	}
	fe := fdlink.New(ep, fds)
	// Our own readers (fdlink.UseReaders): batches of 32 frames, each
	// batch handed to the IPsec wrapper as one, so that it can coalesce
	// the TCP segments it decrypts (GRO after decryption); fdbased's
	// readers deliver frame by frame. The sockets have PACKET_VNET_HDR,
	// so the readers learn which frames are super-frames of a local
	// sender (UDP GSO frames, cut into their datagrams) and which
	// checksums are not computed; and our own writer (fdlink.UseWriter)
	// puts the header before every frame, with UDP segmentation if asked.
	fe.UseReaders(fdlink.ReaderOptions{MTU: mtu, RXChecksumOffload: opts.RXChecksumOffload, ClosedFunc: opts.ClosedFunc})
	fe.UseWriter(fdlink.WriterOptions{UDPSegmentation: opts.UDPSegmentation})
	return &Endpoint{Endpoint: fe}, nil
}

func bufSize(n int) int {
	if n <= 0 {
		return DefaultSocketBuffer
	}
	return n
}

// setBuffers sizes fd's buffers; see DefaultSocketBuffer.
func setBuffers(fd, rcv, snd int) error {
	for _, b := range []struct {
		force, plain, n int
		name            string
	}{
		{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, rcv, "SO_RCVBUF"},
		{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, snd, "SO_SNDBUF"},
	} {
		err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.force, b.n)
		if errors.Is(err, unix.EPERM) {
			err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.plain, b.n)
		}
		if err != nil {
			return fmt.Errorf("%s %d: %w", b.name, b.n, err)
		}
	}
	return nil
}

// lookup finds the interface, turning the kernel's ENODEV into the message
// people expect ("no such network interface").
func lookup(name string) (*net.Interface, error) {
	if len(name) == 0 || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("invalid interface name (1 to %d bytes)", unix.IFNAMSIZ-1)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket for interface lookup: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return nil, errors.New("no such network interface")
		}
		return nil, fmt.Errorf("SIOCGIFINDEX: %w", err)
	}
	return net.InterfaceByIndex(int(ifr.Uint32()))
}

// dropOutgoing is a classic BPF program that rejects frames with pkttype
// PACKET_OUTGOING. With ETH_P_ALL a packet socket also sees what the host
// kernel itself transmits on the interface; with the interface's MAC reused,
// the stack would take the kernel's own NDP (DAD for the same EUI-64
// link-local address, for one) and multicast as received. Frames our own
// sockets send are already skipped by the kernel (skb_loop_sk).
// PACKET_IGNORE_OUTGOING (4.20+) does the same more cheaply, but only for a
// socket outside a fanout group: a group's hook replaces the socket's and
// takes the flag from PACKET_FANOUT_FLAG_IGNORE_OUTGOING instead (tested:
// fdbased's own fanout setup leaks outgoing frames). The filter covers old
// kernels and every setup.
//
//	ld  [SKF_AD_OFF+SKF_AD_PKTTYPE]
//	jeq #PACKET_OUTGOING, drop
//	ret #0xffffffff
//	drop: ret #0
var dropOutgoing = []unix.SockFilter{
	{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: skfAdOff + skfAdPkttype},
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, Jf: 0, K: unix.PACKET_OUTGOING},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0},
}

// openSocket creates one packet socket bound to ifindex. It is created with
// protocol 0, which receives nothing, and only bound to ETH_P_ALL on the
// interface after the filter is in place, so no frame from another
// interface or of our own is ever queued.
func openSocket(ifindex int, fanout bool, rcvbuf, sndbuf int) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := setBuffers(fd, rcvbuf, sndbuf); err != nil {
		return fd, err
	}
	// A virtio_net_hdr before every frame, both ways (fdlink.UseWriter,
	// the readers): segmentation offload on send, super-frames
	// told apart on receive. Set before bind, so no frame is read
	// without it.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fd, fmt.Errorf("PACKET_VNET_HDR: %w", err)
	}
	prog := unix.SockFprog{Len: uint16(len(dropOutgoing)), Filter: &dropOutgoing[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		return fd, fmt.Errorf("SO_ATTACH_FILTER: %w", err)
	}
	if !fanout {
		// Best effort (ENOPROTOOPT before 4.20): the filter already drops
		// these; this only saves the kernel cloning them.
		_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}
	if err := unix.Bind(fd, sa); err != nil {
		return fd, fmt.Errorf("bind: %w", err)
	}
	return fd, nil
}

// joinFanout puts fds in one PACKET_FANOUT_HASH group, so each flow reaches
// one socket and stays in order. The group hook replaces the sockets' own,
// so IGNORE_OUTGOING is set on the group (the flag fdbased's own setup
// lacks). The kernel picks a free group id where it can (UNIQUEID, 4.19+).
func joinFanout(fds []int) error {
	const (
		typ      = unix.PACKET_FANOUT_HASH
		ignore   = unix.PACKET_FANOUT_FLAG_IGNORE_OUTGOING
		uniqueID = unix.PACKET_FANOUT_FLAG_UNIQUEID
	)
	flags := typ | ignore
	var id int
	err := unix.SetsockoptInt(fds[0], unix.SOL_PACKET, unix.PACKET_FANOUT, (flags|uniqueID)<<16)
	if err == nil {
		v, gerr := unix.GetsockoptInt(fds[0], unix.SOL_PACKET, unix.PACKET_FANOUT)
		if gerr != nil {
			return gerr
		}
		id = v & 0xffff
	} else {
		// Old kernel: no UNIQUEID, maybe no IGNORE_OUTGOING (the BPF
		// filter still drops outgoing frames). Pick an id from our pid.
		flags = typ
		id = unix.Getpid() & 0xffff
		if err := unix.SetsockoptInt(fds[0], unix.SOL_PACKET, unix.PACKET_FANOUT, id|flags<<16); err != nil {
			return err
		}
	}
	for _, fd := range fds[1:] {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, id|flags<<16); err != nil {
			return err
		}
	}
	return nil
}

// Ancillary BPF load offsets (linux/filter.h).
const (
	skfAdOff     = 0xfffff000
	skfAdPkttype = 4
)

// htons converts to network byte order, as sockaddr_ll.sll_protocol wants.
func htons(v uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))
}
