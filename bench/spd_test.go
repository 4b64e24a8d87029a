package main

import (
	"testing"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestSPDPoliciesDistinct: the benchmark's million policies are distinct
// selectors, which the SPD requires (a policy's identity is its selector
// and direction, as in Linux); before, k wrapped at 2^16 and the
// million-policy SPD failed with EEXIST.
func TestSPDPoliciesDistinct(t *testing.T) {
	if testing.Short() {
		t.Skip("a million selectors")
	}
	spd := xfrm.NewSPD()
	for i := 0; i < 1000000; i++ {
		if _, err := spd.Add(spdPolicy(i)); err != nil {
			t.Fatalf("policy %d: %v", i, err)
		}
	}
}
