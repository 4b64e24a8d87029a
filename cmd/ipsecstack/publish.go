package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"

	"github.com/ipsecstack/ipsecstack/stack"
)

// --publish is --forward turned round: the listener is inside the stack,
// on every stack address (IPv4 and IPv6: a dual-stack listener, as
// --echo's), and each connection or UDP client session is dialled to a
// program on the host. The relays below take their two ends as plain
// net.Conns, so they do not care which side is the stack; they share
// copyIdle with --forward and its limits (--forward-max-sessions and
// --forward-idle-timeout bound every --publish too), counted apart as
// Publish* in `ipsecstack stats`.

// startPublish starts a --publish listener inside st and returns the
// function that stops it (closing the listener and every connection).
func startPublish(ctx context.Context, st *stack.Stack, p publishSpec, lim forwardLimits, stats *forwardStats, log *slog.Logger) (func(), error) {
	local := tcpip.FullAddress{NIC: st.NIC, Port: p.Port}
	if p.Proto == "udp" {
		pc, err := gonet.DialUDP(st.Stack, &local, nil, ipv6.ProtocolNumber)
		if err != nil {
			return nil, fmt.Errorf("stack port udp:%d: %w", p.Port, err)
		}
		var d net.Dialer
		r := newSessionRelay(pc, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "udp", p.To) },
			p.String(), lim, stats, log)
		return r.start(ctx), nil
	}
	ln, err := gonet.ListenTCP(st.Stack, local, ipv6.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("stack port tcp:%d: %w", p.Port, err)
	}
	d := net.Dialer{Timeout: 30 * time.Second}
	return serveTCPRelay(ctx, ln, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", p.To) },
		p.String(), lim, stats, log), nil
}
