package esp

import "testing"

// TestGoGCMFallback runs the AES-GCM tests again on Go's crypto/cipher
// GCM, which serves CPUs without VAES/AVX-512 (and the 8-byte ICV's
// truncating path with it), so that path stays tested on CPUs that have
// them.
func TestGoGCMFallback(t *testing.T) {
	if !useVAESGCM {
		t.Skip("Go's GCM serves on this CPU already: the other tests cover it")
	}
	useVAESGCM = false
	defer func() { useVAESGCM = true }()
	t.Run("AEADVectors", TestAEADVectors)
	t.Run("RoundTrip", TestRoundTrip)
	t.Run("BitFlips", TestBitFlips)
	t.Run("Truncation", TestTruncation)
	t.Run("Allocs", TestAllocs)
	t.Run("Zero", TestZero)
}
