package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/ipsecstack/ipsecstack/control"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// JSON ops on the control socket (besides the control package's "version"):
//
//	{"op":"stats"}  → [{"name":"XfrmInError","value":0}, …] in /proc order
//	{"op":"ping","addr":"fd00::2","seq":1,"size":56,"timeout_ms":1000}
//	                → {"seq":1,"bytes":64,"rtt_ns":412000}
//	{"op":"sas"}    → [{"proto":"esp","spi":"0x00001001",…}, …] (no keys)

type statJSON struct {
	Name  string `json:"name"`
	Value uint64 `json:"value"`
}

type pingReq struct {
	Addr      string `json:"addr"`
	Seq       uint16 `json:"seq"`
	Size      int    `json:"size"`
	TimeoutMS int    `json:"timeout_ms"`
}

type pingResp struct {
	Seq   uint16 `json:"seq"`
	Bytes int    `json:"bytes"` // ICMP message size: 8 + payload
	RTTNs int64  `json:"rtt_ns"`
}

type saJSON struct {
	Proto   string `json:"proto"`
	SPI     string `json:"spi"`
	Src     string `json:"src"`
	Dst     string `json:"dst"`
	Mode    string `json:"mode"`
	State   string `json:"state"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// maxPingSize keeps an echo within one IPv4/IPv6 datagram.
const maxPingSize = 65507 - 8

func registerOps(s *control.Server, st *stack.Stack, log *slog.Logger) {
	s.HandleJSON("stats", func(json.RawMessage) (any, error) {
		var out []statJSON
		for _, v := range st.Engine.Stats.Snapshot() {
			out = append(out, statJSON{v.Name, v.Value})
		}
		return out, nil
	})
	s.HandleJSON("ping", func(raw json.RawMessage) (any, error) {
		var req pingReq
		if err := jsonReq(raw, &req); err != nil {
			return nil, err
		}
		addr, err := netip.ParseAddr(req.Addr)
		if err != nil {
			return nil, fmt.Errorf("ping: bad address %q", req.Addr)
		}
		addr = addr.Unmap()
		if req.Size < 0 || req.Size > maxPingSize {
			return nil, fmt.Errorf("ping: size %d out of range 0-%d", req.Size, maxPingSize)
		}
		to := time.Duration(req.TimeoutMS) * time.Millisecond
		if to <= 0 || to > time.Minute {
			to = time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), to)
		defer cancel()
		r, err := st.Ping(ctx, addr, req.Seq, req.Size)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, errors.New("timeout")
			}
			log.Debug("ping", "addr", addr.String(), "err", err)
			return nil, err
		}
		return pingResp{Seq: r.Seq, Bytes: r.Size + 8, RTTNs: r.RTT.Nanoseconds()}, nil
	})
	s.HandleJSON("sas", func(json.RawMessage) (any, error) {
		out := []saJSON{}
		st.Engine.SAD.Walk(func(sa *xfrm.SA) bool {
			c := &sa.Config
			out = append(out, saJSON{c.Proto.String(), fmt.Sprintf("0x%08x", c.SPI), c.Src.String(), c.Dst.String(),
				c.Mode.String(), sa.State().String(), sa.Counters.Packets.Load(), sa.Counters.Bytes.Load()})
			return true
		})
		slices.SortFunc(out, func(a, b saJSON) int {
			return cmp.Or(cmp.Compare(a.SPI, b.SPI), cmp.Compare(a.Dst, b.Dst))
		})
		return out, nil
	})
}

// applySourceHints sets the preferred source address of the routes that
// name one (--route …,src=ADDR): on a NIC with several addresses gVisor
// otherwise picks one itself, and a tunnel-mode policy between inner
// prefixes needs the inner address as the source.
func applySourceHints(st *stack.Stack, routes []routeSpec) error {
	table := st.GetRouteTable()
	changed := false
	for _, r := range routes {
		if !r.Src.IsValid() {
			continue
		}
		addr := tcpip.AddrFromSlice(r.Src.AsSlice())
		if st.CheckLocalAddress(st.NIC, stack.Proto(r.Src), addr) == 0 {
			return fmt.Errorf("--route %v: src %v is not an address of the stack (give it with --addr)", r.Dst, r.Src)
		}
		for i := range table {
			t := &table[i]
			if t.Destination.ID() == tcpip.AddrFromSlice(r.Dst.Addr().AsSlice()) && t.Destination.Prefix() == r.Dst.Bits() {
				t.SourceHint = addr
				changed = true
			}
		}
	}
	if changed {
		st.SetRouteTable(table)
	}
	return nil
}
