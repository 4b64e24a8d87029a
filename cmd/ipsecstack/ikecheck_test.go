package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIKECheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.conf")
	os.WriteFile(good, []byte(`connections {
  gw {
    remote_addrs = 192.0.2.1
    proposals = aes256gcm16-prfsha384-ecp384
    local { auth = psk
            id = moon.strongswan.org }
    remote { auth = psk }
    children { net { local_ts = 10.1.0.0/16
                     remote_ts = 10.2.0.0/16[tcp/443] } }
  }
}
secrets { ike { secret = "never printed" } }
`), 0o644)
	var out, errb bytes.Buffer
	if rc := runIKECheck([]string{good}, &out, &errb); rc != 0 {
		t.Fatalf("exit %d, stderr %q", rc, errb.String())
	}
	for _, want := range []string{"gw: IKEv2", "remote 192.0.2.1 port 500", "proposal AES_GCM_16_256/PRF_HMAC_SHA2_384/ECP_384",
		"local: auth psk, id moon.strongswan.org", "child net: tunnel, local 10.1.0.0/16, remote 10.2.0.0/16[tcp/443]",
		"1 connections, 1 secrets"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "never printed") {
		t.Error("the PSK was printed")
	}

	bad := filepath.Join(dir, "bad.conf")
	os.WriteFile(bad, []byte("connections {\n gw {\n  mobike = yes\n }\n}\n"), 0o644)
	out.Reset()
	errb.Reset()
	if rc := runIKECheck([]string{bad}, &out, &errb); rc != 2 {
		t.Errorf("exit %d, want 2", rc)
	}
	if got, want := errb.String(), bad+":3: connection option mobike = yes is not supported by ipsecstack\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
	if rc := runIKECheck(nil, &out, &errb); rc != 2 {
		t.Errorf("no file: exit %d, want 2", rc)
	}
}
