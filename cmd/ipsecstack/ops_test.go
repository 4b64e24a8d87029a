package main

import (
	"encoding/json"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/ipsecstack/ipsecstack/control"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestSAsPaged: the "sas" op lists 2,000 SAs completely, in (dst, proto,
// SPI) order, over one connection that stays usable. As one reply, the
// list stopped fitting the control socket at about 1,700 SAs and the
// server closed the connection.
func TestSAsPaged(t *testing.T) {
	const n = 2000
	e := xfrm.NewEngine()
	defer e.Close()
	for i := 0; i < n; i++ {
		sa, err := xfrm.NewSA(xfrm.SAConfig{Proto: xfrm.ProtoESP, SPI: 0x1000 + uint32(i), Mode: xfrm.ModeTunnel,
			Src: netip.MustParseAddr("fd00::1"), Dst: netip.AddrFrom16([16]byte{0xfd, 15: byte(i % 7)}),
			AEAD: xfrm.Algorithm{Name: "aes-gcm-16", Key: make([]byte, 20)}})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.SAD.Add(sa); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := control.Listen(filepath.Join(t.TempDir(), "c.sock"), e)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.HandleJSON("sas", func(raw json.RawMessage) (any, error) { return sasPage(e, raw) })
	c, err := control.Dial(srv.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []saJSON
	pages := 0
	err = c.CallPages("sas", nil, func(p json.RawMessage) error {
		var s []saJSON
		pages++
		err := json.Unmarshal(p, &s)
		got = append(got, s...)
		return err
	})
	if err != nil {
		t.Fatalf("after %d SAs: %v", len(got), err)
	}
	if len(got) != n {
		t.Fatalf("%d of %d SAs listed", len(got), n)
	}
	seen := map[string]bool{}
	for i, s := range got {
		if seen[s.SPI] || s.Proto != "esp" || s.Mode != "tunnel" || s.Src != "fd00::1" {
			t.Fatalf("entry %d: %+v (repeated or wrong)", i, s)
		}
		seen[s.SPI] = true
		if i > 0 {
			p := got[i-1]
			pd, d := netip.MustParseAddr(p.Dst), netip.MustParseAddr(s.Dst)
			if c := pd.Compare(d); c > 0 || (c == 0 && p.SPI >= s.SPI) {
				t.Fatalf("entries %d, %d out of order: %v %v, %v %v", i-1, i, p.Dst, p.SPI, s.Dst, s.SPI)
			}
		}
	}
	t.Logf("%d SAs in %d pages", n, pages)
	if err := c.Call("version", nil, nil); err != nil {
		t.Fatalf("connection unusable after listing: %v", err)
	}
	for _, bad := range []string{"x", "fd00::/x/2", "fd00::1/300/1"} {
		if err := c.Call("sas", map[string]string{"after": bad}, nil); err == nil {
			t.Errorf("cursor %q accepted", bad)
		}
	}
}
