package main

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"time"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// spdPolicy returns the i-th policy of the benchmark SPD: even i an exact
// selector (host to host, TCP, one destination port), odd i a prefix
// selector (a /24, /20 or /16 source to a /24 or /16 destination, any
// protocol), all distinct.
func spdPolicy(i int) *xfrm.Policy {
	var sel xfrm.Selector
	if i%2 == 0 {
		j := i / 2
		src := netip.AddrFrom4([4]byte{10, byte(j >> 16), byte(j >> 8), byte(j)})
		dst := netip.AddrFrom4([4]byte{172, 16 + byte(j>>16&15), byte(j >> 8), byte(j)})
		sel = xfrm.Selector{Src: netip.PrefixFrom(src, 32), Dst: netip.PrefixFrom(dst, 32),
			Proto: xfrm.ProtoTCP, DstPorts: xfrm.PortRange{Lo: 443, Hi: 443}}
	} else {
		j := i / 2
		srcBits := []int{24, 20, 16}[j%3]
		dstBits := []int{24, 16}[j/3%2]
		k := j / 6
		// Distinct networks: k spread over the bits the prefixes keep.
		src := netip.AddrFrom4([4]byte{100, byte(k >> 12), byte(k >> 4), byte(k << 4)})
		dst := netip.AddrFrom4([4]byte{198, byte(k >> 8), byte(k), 0})
		sel = xfrm.Selector{Src: netip.PrefixFrom(src, srcBits).Masked(), Dst: netip.PrefixFrom(dst, dstBits).Masked()}
		if srcBits < 24 {
			// Keep selectors distinct after masking, up to k = 2^20
			// (a million policies): k's high bits go in the first
			// octet, since a /24 destination keeps only its low 16.
			src = netip.AddrFrom4([4]byte{byte(101 + j%3 + 3*(k>>16)), byte(k >> 8), byte(k), 0})
			sel.Src = netip.PrefixFrom(src, 24).Masked()
			sel.Proto = xfrm.ProtoUDP
		}
		if dstBits == 16 {
			dst = netip.AddrFrom4([4]byte{byte(199 + j%2), byte(k >> 16), byte(k >> 8), byte(k)})
			sel.Dst = netip.PrefixFrom(dst, 32)
			sel.SrcPorts = xfrm.PortRange{Lo: 1000, Hi: 1999}
		}
	}
	return &xfrm.Policy{Dir: xfrm.DirOut, Priority: uint32(1000 + i%7), Action: xfrm.ActionBypass, Sel: sel}
}

// flowFor returns a flow that the i-th policy matches, with source port
// sport (the prefix policies with a port range take 1000-1999).
func flowFor(p *xfrm.Policy, sport uint16) xfrm.Flow {
	s := p.Sel
	proto := s.Proto
	if proto == 0 {
		proto = xfrm.ProtoTCP
	}
	dport := uint16(80)
	if s.DstPorts.Lo != 0 {
		dport = s.DstPorts.Lo
	}
	if s.SrcPorts.Lo != 0 {
		sport = s.SrcPorts.Lo + sport%1000
	}
	return xfrm.Flow{Src: s.Src.Addr(), Dst: s.Dst.Addr(), Proto: proto, SrcPort: sport, DstPort: dport}
}

type spdSetup struct {
	spd       *xfrm.SPD
	hit, miss []xfrm.Flow
	insertNs  float64
}

func buildSPD(n int) (*spdSetup, error) {
	pols := make([]*xfrm.Policy, n)
	for i := range pols {
		pols[i] = spdPolicy(i)
	}
	s := &spdSetup{spd: xfrm.NewSPD()}
	t0 := time.Now()
	for _, p := range pols {
		if _, err := s.spd.Add(p); err != nil {
			return nil, fmt.Errorf("policy %v: %w", p.Sel, err)
		}
	}
	s.insertNs = float64(time.Since(t0).Nanoseconds()) / float64(n)
	rng := rand.New(rand.NewPCG(uint64(n), 3))
	// Hits: 64 flows, cycled, that stay in the flow cache.
	for i := 0; i < 64; i++ {
		s.hit = append(s.hit, flowFor(pols[rng.IntN(n)], uint16(2000+i)))
	}
	// Misses: 16384 distinct flows cycled through a 4096-slot cache.
	for i := 0; i < 16384; i++ {
		s.miss = append(s.miss, flowFor(pols[rng.IntN(n)], uint16(2000+rng.IntN(60000))))
	}
	for _, f := range s.hit {
		if s.spd.Lookup(xfrm.DirOut, &f) == nil {
			return nil, fmt.Errorf("flow %v matches no policy", f)
		}
	}
	return s, nil
}

const lookupOps = 256

func (s *spdSetup) lookups(flows []xfrm.Flow) func() {
	i := 0
	return func() {
		for k := 0; k < lookupOps; k++ {
			if s.spd.Lookup(xfrm.DirOut, &flows[i]) == nil {
				panic("no policy")
			}
			i++
			if i == len(flows) {
				i = 0
			}
		}
	}
}

func runSPD(o opts, r *Results) error {
	budget := 200 * time.Millisecond
	if o.quick {
		budget = 50 * time.Millisecond
	}
	base, err := buildSPD(10)
	if err != nil {
		return err
	}
	// Insertion per policy of the small SPD is noisy: take 1000 tries.
	var ins []float64
	for k := 0; k < 1000; k++ {
		b, _ := buildSPD(10)
		ins = append(ins, b.insertNs)
	}
	baseIns := median(ins)
	for _, n := range []int{10, 1000, 10000, 100000, 1000000} {
		runtime.GC()
		s, err := buildSPD(n)
		if err != nil {
			return err
		}
		for _, m := range []struct {
			name    string
			a, b    func()
			targets bool
		}{
			{"lookup, flow-cache hit", s.lookups(s.hit), base.lookups(base.hit), true},
			{"lookup, flow-cache miss", s.lookups(s.miss), base.lookups(base.miss), true},
		} {
			ea, eb := interleave(budget, m.a, m.b)
			note := ""
			if n == 100000 {
				note = "target: within 2x of 10 policies (ratio >= 0.5): "
				if eb/ea >= 0.5 {
					note += "met"
				} else {
					note += "missed"
				}
			}
			r.time("spd", fmt.Sprintf("SPD %d policies", n), m.name, "ns", ea/lookupOps, eb/lookupOps, "10 policies", note)
		}
		note := fmt.Sprintf("%d policies inserted in %.3f s", n, s.insertNs*float64(n)/1e9)
		if n == 100000 {
			if s.insertNs*float64(n) < 1e9 {
				note += "; target < 1 s: met"
			} else {
				note += "; target < 1 s: missed"
			}
		}
		r.time("spd", fmt.Sprintf("SPD %d policies", n), "insert per policy", "ns", s.insertNs, baseIns, "10 policies", note)
		s = nil
	}
	return runSAD(budget, r)
}

// sadSA returns the i-th SA: ESP AES-GCM-128 to its own peer address.
func sadSA(i int) xfrm.SAConfig {
	k := make([]byte, 20)
	k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
	return xfrm.SAConfig{Proto: xfrm.ProtoESP, SPI: uint32(0x10000 + i), Mode: xfrm.ModeTransport,
		Src: netip.AddrFrom4([4]byte{192, 0, 2, 1}), Dst: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
		AEAD: xfrm.Algorithm{Name: "rfc4106(gcm(aes))", Key: k}, ReplayWindow: 128}
}

func buildSAD(n int) (*xfrm.SAD, []xfrm.SAConfig, float64, error) {
	d := xfrm.NewSAD()
	cfgs := make([]xfrm.SAConfig, n)
	for i := range cfgs {
		cfgs[i] = sadSA(i)
	}
	t0 := time.Now()
	for _, c := range cfgs {
		sa, err := xfrm.NewSA(c)
		if err != nil {
			return nil, nil, 0, err
		}
		if err := d.Add(sa); err != nil {
			return nil, nil, 0, err
		}
	}
	return d, cfgs, float64(time.Since(t0).Nanoseconds()) / float64(n), nil
}

func runSAD(budget time.Duration, r *Results) error {
	small, smallCfg, smallIns, err := buildSAD(10)
	if err != nil {
		return err
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	const n = 1000000
	d, cfgs, ins, err := buildSAD(n)
	if err != nil {
		return err
	}
	// The configs are kept by the benchmark too: count them out.
	keep := make([]netip.Addr, n)
	spis := make([]uint32, n)
	for i, c := range cfgs {
		keep[i], spis[i] = c.Dst, c.SPI
	}
	cfgs = nil
	runtime.GC()
	runtime.ReadMemStats(&m1)
	perSA := (float64(m1.HeapAlloc) - float64(m0.HeapAlloc) - float64(n*(24+4))) / n
	rng := rand.New(rand.NewPCG(1, 2))
	idx := make([]int, 4096)
	for i := range idx {
		idx[i] = rng.IntN(n)
	}
	sidx := make([]int, 4096)
	for i := range sidx {
		sidx[i] = rng.IntN(len(smallCfg))
	}
	look := func(d *xfrm.SAD, dst func(int) (netip.Addr, uint32), idx []int) func() {
		k := 0
		return func() {
			for j := 0; j < lookupOps; j++ {
				a, s := dst(idx[k])
				if d.Lookup(a, xfrm.ProtoESP, s) == nil {
					panic("no SA")
				}
				k = (k + 1) % len(idx)
			}
		}
	}
	ea, eb := interleave(budget, look(d, func(i int) (netip.Addr, uint32) { return keep[i], spis[i] }, idx),
		look(small, func(i int) (netip.Addr, uint32) { return smallCfg[i].Dst, smallCfg[i].SPI }, sidx))
	r.time("spd", "SAD 1000000 SAs", "SPI lookup (random)", "ns", ea/lookupOps, eb/lookupOps, "10 SAs", "")
	r.time("spd", "SAD 1000000 SAs", "add per SA (NewSA+Add)", "ns", ins, smallIns, "10 SAs", "AES-GCM-128 SAs, keys expanded")
	r.add(Result{Suite: "spd", Case: "SAD 1000000 SAs", Metric: "memory per SA", Value: perSA, Unit: "B",
		Note: "heap growth / SAs, AES-GCM-128 with 128-packet replay window"})
	runtime.KeepAlive(d)
	return nil
}
