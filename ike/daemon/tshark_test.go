package daemon

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/link/memlink"
	"github.com/ipsecstack/ipsecstack/link/pcap"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestKeyLogDecryptsIKE: tshark (Wireshark 4.0), given the daemon's
// ikev2_decryption_table line and nothing else, decrypts the captured
// IKE_AUTH and INFORMATIONAL exchanges: it shows the identities inside
// IKE_AUTH and the Delete inside the INFORMATIONAL request, for the
// default suite (AES-CBC + HMAC-SHA2-256) and an AEAD one (AES-GCM-16).
// Skipped without tshark.
func TestKeyLogDecryptsIKE(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed")
	}
	gcm := []message.Proposal{{Num: 1, Protocol: message.ProtoIKE, Transforms: []message.Transform{
		{Type: message.TransformENCR, ID: message.ENCR_AES_GCM_16, Attributes: []message.Attribute{message.KeyLengthAttr(256)}},
		{Type: message.TransformPRF, ID: message.PRF_HMAC_SHA2_384},
		{Type: message.TransformKE, ID: message.KE_ECP256},
	}}}
	for _, c := range []struct {
		name  string
		props []message.Proposal
	}{{"aes-cbc-sha256", ikeProposal()}, {"aes-gcm-256", gcm}} {
		t.Run(c.name, func(t *testing.T) {
			cfgA := connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartNone)
			cfgB := connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone)
			cfgA.Connections[0].Proposals, cfgB.Connections[0].Proposals = c.props, c.props
			b := newBed(t, 4, cfgA, cfgB)
			var buf bytes.Buffer
			var mu sync.Mutex
			w, err := pcap.NewWriter(&buf, 0)
			if err != nil {
				t.Fatal(err)
			}
			b.linkA.SetTap(func(dir memlink.Direction, f []byte) {
				mu.Lock()
				pcap.Tap(w)(dir, f)
				mu.Unlock()
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := b.da.Initiate(ctx, "peer"); err != nil {
				t.Fatal(err)
			}
			if err := b.da.Terminate(ctx, "peer"); err != nil {
				t.Fatal(err)
			}
			b.mu.Lock()
			lines := append([]string(nil), b.keyLines...)
			b.mu.Unlock()
			if len(lines) != 1 {
				t.Fatalf("%d key lines", len(lines))
			}
			mu.Lock()
			file := filepath.Join(t.TempDir(), "ike.pcap")
			os.WriteFile(file, buf.Bytes(), 0o600)
			mu.Unlock()
			out, err := exec.Command("tshark", "-r", file, "-o", "uat:ikev2_decryption_table:"+lines[0], "-V").CombinedOutput()
			if err != nil {
				t.Fatalf("tshark: %v\n%s", err, out)
			}
			s := string(out)
			for _, want := range []string{"Identification - Initiator", "Identification - Responder", "a.test", "b.test", "Payload: Delete"} {
				if !strings.Contains(s, want) {
					t.Errorf("tshark's decryption lacks %q", want)
				}
			}
			if t.Failed() {
				t.Logf("key line %s\ntshark:\n%s", lines[0], s)
			}
		})
	}
}
