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
	"strconv"
	"strings"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/ipsecstack/ipsecstack/control"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// JSON ops on the control socket (besides the control package's "version"):
//
//	{"op":"stats"}  → [{"name":"XfrmInError","value":0}, …] in /proc order,
//	                  then the daemon's own counters (daemonStats)
//	{"op":"ping","addr":"fd00::2","seq":1,"size":56,"timeout_ms":1000}
//	                → {"seq":1,"bytes":64,"rtt_ns":412000}
//	{"op":"sas","after":"CURSOR","limit":N}
//	                → [{"proto":"esp","spi":"0x00001001",…}, …] (no keys),
//	                  at most 500 per reply, in (dst, proto, SPI) order; the
//	                  reply's "next" is the cursor of the following page
//	                  (control.Client.CallPages follows it)

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

func registerOps(s *control.Server, st *stack.Stack, ds *daemonStats, log *slog.Logger) {
	s.HandleJSON("stats", func(json.RawMessage) (any, error) {
		var out []statJSON
		for _, v := range st.Engine.Stats.Snapshot() {
			out = append(out, statJSON{v.Name, v.Value})
		}
		for _, v := range ds.Snapshot() {
			out = append(out, statJSON{v.Name, v.Value})
		}
		for _, v := range ds.IKESnapshot() {
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
	s.HandleJSON("sas", func(raw json.RawMessage) (any, error) { return sasPage(st.Engine, raw) })
}

// sasPageMax is the most SAs in one "sas" reply: about 200 bytes each,
// well under the control socket's reply limit.
const sasPageMax = 500

type sasReq struct {
	After string `json:"after"`
	Limit int    `json:"limit"`
}

// sasKey orders the "sas" listing (destination, protocol, SPI) and is the
// paging cursor: "dst/proto/spi".
type sasKey struct {
	dst   netip.Addr
	proto xfrm.Proto
	spi   uint32
}

func (k sasKey) compare(o sasKey) int {
	return cmp.Or(k.dst.Compare(o.dst), cmp.Compare(k.proto, o.proto), cmp.Compare(k.spi, o.spi))
}

func (k sasKey) String() string { return fmt.Sprintf("%s/%d/%d", k.dst, k.proto, k.spi) }

func parseSasKey(s string) (sasKey, error) {
	var k sasKey
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return k, fmt.Errorf("sas: bad cursor %q", s)
	}
	dst, err1 := netip.ParseAddr(parts[0])
	proto, err2 := strconv.ParseUint(parts[1], 10, 8)
	spi, err3 := strconv.ParseUint(parts[2], 10, 32)
	if err := errors.Join(err1, err2, err3); err != nil {
		return k, fmt.Errorf("sas: bad cursor %q", s)
	}
	return sasKey{dst, xfrm.Proto(proto), uint32(spi)}, nil
}

// sasPage answers one page of the "sas" op: the SAs after the cursor, in
// (destination, protocol, SPI) order, at most limit (default and cap
// sasPageMax), with the cursor of the next page when more remain. An
// unbounded single reply stopped working at about 1,700 SAs (the socket
// cannot carry a datagram larger than its send buffer).
func sasPage(eng *xfrm.Engine, raw json.RawMessage) (control.Page, error) {
	var req sasReq
	if err := jsonReq(raw, &req); err != nil {
		return control.Page{}, err
	}
	limit := req.Limit
	if limit <= 0 || limit > sasPageMax {
		limit = sasPageMax
	}
	var after *sasKey
	if req.After != "" {
		k, err := parseSasKey(req.After)
		if err != nil {
			return control.Page{}, err
		}
		after = &k
	}
	type entry struct {
		key sasKey
		sa  *xfrm.SA
	}
	var list []entry
	eng.SAD.Walk(func(sa *xfrm.SA) bool {
		c := &sa.Config
		k := sasKey{c.Dst, c.Proto, c.SPI}
		if after == nil || k.compare(*after) > 0 {
			list = append(list, entry{k, sa})
		}
		return true
	})
	slices.SortFunc(list, func(a, b entry) int { return a.key.compare(b.key) })
	next := ""
	if len(list) > limit {
		list = list[:limit]
		next = list[limit-1].key.String()
	}
	out := make([]saJSON, 0, len(list))
	for _, e := range list {
		c := &e.sa.Config
		out = append(out, saJSON{c.Proto.String(), fmt.Sprintf("0x%08x", c.SPI), c.Src.String(), c.Dst.String(),
			c.Mode.String(), e.sa.State().String(), e.sa.Counters.Packets.Load(), e.sa.Counters.Bytes.Load()})
	}
	return control.Page{Items: out, Next: next}, nil
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
		if st.CheckLocalAddress(0, stack.Proto(r.Src), addr) == 0 {
			return fmt.Errorf("--route %v: src %v is not an address of the stack (give it with --addr, --lan-addr or --tun-addr)", r.Dst, r.Src)
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
