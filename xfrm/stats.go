package xfrm

import (
	"fmt"
	"io"
	"sync/atomic"
)

// Stats are the XFRM MIB counters, named and ordered as Linux prints them in
// /proc/net/xfrm_stat, so users can compare them with a kernel peer's.
type Stats struct {
	InError             atomic.Uint64 // all errors not matched by other counters
	InBufferError       atomic.Uint64 // no buffer space
	InHdrError          atomic.Uint64 // header error (truncated, unparsable)
	InNoStates          atomic.Uint64 // no SA found for (dst, proto, SPI)
	InStateProtoError   atomic.Uint64 // transform failed: ICV mismatch, bad padding
	InStateModeError    atomic.Uint64 // mode-specific error (bad inner packet)
	InStateSeqError     atomic.Uint64 // sequence number out of window or replayed
	InStateExpired      atomic.Uint64 // SA lifetime expired
	InStateMismatch     atomic.Uint64 // SA selector does not match the inner packet
	InStateInvalid      atomic.Uint64 // SA not usable (larval, dead)
	InTmplMismatch      atomic.Uint64 // no template matched the SAs used (or none used)
	InNoPols            atomic.Uint64 // no policy and default is block
	InPolBlock          atomic.Uint64 // policy discards
	InPolError          atomic.Uint64 // policy error
	OutError            atomic.Uint64 // all errors not matched by other counters
	OutBundleGenError   atomic.Uint64 // bundle generation error
	OutBundleCheckError atomic.Uint64 // bundle check error
	OutNoStates         atomic.Uint64 // protect policy, no SA: dropped, ACQUIRE raised
	OutStateProtoError  atomic.Uint64 // transform failed
	OutStateModeError   atomic.Uint64 // mode-specific error
	OutStateSeqError    atomic.Uint64 // sequence number overflow
	OutStateExpired     atomic.Uint64 // SA lifetime expired
	OutPolBlock         atomic.Uint64 // policy discards
	OutPolDead          atomic.Uint64 // policy is dead
	OutPolError         atomic.Uint64 // policy error
	FwdHdrError         atomic.Uint64 // forwarded packet header error
	OutStateInvalid     atomic.Uint64 // SA not usable
	AcquireError        atomic.Uint64 // ACQUIRE could not be raised
}

// Stat is one named counter value.
type Stat struct {
	Name  string
	Value uint64
}

// Snapshot returns every counter with its Linux name, in /proc order.
func (s *Stats) Snapshot() []Stat {
	return []Stat{
		{"XfrmInError", s.InError.Load()},
		{"XfrmInBufferError", s.InBufferError.Load()},
		{"XfrmInHdrError", s.InHdrError.Load()},
		{"XfrmInNoStates", s.InNoStates.Load()},
		{"XfrmInStateProtoError", s.InStateProtoError.Load()},
		{"XfrmInStateModeError", s.InStateModeError.Load()},
		{"XfrmInStateSeqError", s.InStateSeqError.Load()},
		{"XfrmInStateExpired", s.InStateExpired.Load()},
		{"XfrmInStateMismatch", s.InStateMismatch.Load()},
		{"XfrmInStateInvalid", s.InStateInvalid.Load()},
		{"XfrmInTmplMismatch", s.InTmplMismatch.Load()},
		{"XfrmInNoPols", s.InNoPols.Load()},
		{"XfrmInPolBlock", s.InPolBlock.Load()},
		{"XfrmInPolError", s.InPolError.Load()},
		{"XfrmOutError", s.OutError.Load()},
		{"XfrmOutBundleGenError", s.OutBundleGenError.Load()},
		{"XfrmOutBundleCheckError", s.OutBundleCheckError.Load()},
		{"XfrmOutNoStates", s.OutNoStates.Load()},
		{"XfrmOutStateProtoError", s.OutStateProtoError.Load()},
		{"XfrmOutStateModeError", s.OutStateModeError.Load()},
		{"XfrmOutStateSeqError", s.OutStateSeqError.Load()},
		{"XfrmOutStateExpired", s.OutStateExpired.Load()},
		{"XfrmOutPolBlock", s.OutPolBlock.Load()},
		{"XfrmOutPolDead", s.OutPolDead.Load()},
		{"XfrmOutPolError", s.OutPolError.Load()},
		{"XfrmFwdHdrError", s.FwdHdrError.Load()},
		{"XfrmOutStateInvalid", s.OutStateInvalid.Load()},
		{"XfrmAcquireError", s.AcquireError.Load()},
	}
}

// Get returns the value of the counter with the given Linux name.
func (s *Stats) Get(name string) (uint64, bool) {
	for _, st := range s.Snapshot() {
		if st.Name == name {
			return st.Value, true
		}
	}
	return 0, false
}

// WriteTo prints the counters in /proc/net/xfrm_stat format.
func (s *Stats) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for _, st := range s.Snapshot() {
		m, err := fmt.Fprintf(w, "%-24s\t%d\n", st.Name, st.Value)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
