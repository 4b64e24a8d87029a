package message

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// swanVector is one strongSwan 5.9.8 run, as ike/testdata/strongswan/
// extract.py wrote it; only the fields this package needs.
type swanVector struct {
	Name              string `json:"name"`
	IKEProposal       string `json:"ike_proposal"`
	IKESAInitRequest  string `json:"ike_sa_init_request"`
	IKESAInitResponse string `json:"ike_sa_init_response"`
	IKEAuthRequest    string `json:"ike_auth_request"`
	IKEAuthResponse   string `json:"ike_auth_response"`
}

func loadSwanVectors(t testing.TB) []swanVector {
	t.Helper()
	files, err := filepath.Glob("../testdata/strongswan/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no strongSwan vectors: %v", err)
	}
	var vs []swanVector
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v swanVector
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		vs = append(vs, v)
	}
	return vs
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
