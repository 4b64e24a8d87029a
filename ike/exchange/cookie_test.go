package exchange

import (
	"net/netip"
	"testing"
)

// TestCookieExchange: a responder under load answers the first
// IKE_SA_INIT with a COOKIE, keeps no state, and lets the initiator's
// retry (cookie first, §2.6) through; the exchange then completes, AUTH
// covering the request with the cookie.
func TestCookieExchange(t *testing.T) {
	ci, cr := configs(suites[0].ike, suites[0].esp)
	jar := NewCookies()
	i, _ := NewInitiator(ci)
	r, _ := NewResponder(cr)
	req, _ := i.Start()
	resp, ok := CheckCookie(jar, req, addrI.Addr())
	if ok || resp == nil {
		t.Fatal("request without cookie let through")
	}
	reqs, done, err := i.Handle(resp)
	if err != nil || done || len(reqs) != 1 {
		t.Fatal(err)
	}
	req = reqs[0]
	// A cookie is bound to the initiator's address.
	if _, ok := CheckCookie(jar, req, netip.MustParseAddr("203.0.113.9")); ok {
		t.Error("cookie accepted from another address")
	}
	jar.Rotate() // a cookie of the previous secret still works
	if _, ok := CheckCookie(jar, req, addrI.Addr()); !ok {
		t.Fatal("valid cookie refused")
	}
	for n := 0; ; n++ {
		resp, rdone, err := r.Handle(req)
		if err != nil || len(resp) != 1 {
			t.Fatal(err)
		}
		next, idone, err := i.Handle(resp[0])
		if err != nil {
			t.Fatal(err)
		}
		if idone && rdone {
			break
		}
		if n > 2 {
			t.Fatal("no end")
		}
		req = next[0]
	}
	jar.Rotate()
	jar.Rotate()
	if _, ok := CheckCookie(jar, req, addrI.Addr()); ok {
		t.Error("cookie of a secret two rotations old accepted")
	}
	if jar.Valid(make([]byte, 20), 1, make([]byte, 16), addrI.Addr()) {
		t.Error("forged cookie accepted")
	}
}
