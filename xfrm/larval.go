package xfrm

import (
	"fmt"
	"net/netip"
	"time"
)

// DefaultLarvalTimeout is how long a larval SA (made by PF_KEY GETSPI)
// waits for its keys before it is deleted with a hard EXPIRE, as Linux's
// XFRM_ACQ_EXPIRES (30 s) does.
const DefaultLarvalTimeout = 30 * time.Second

// NewLarvalSA returns an SA in StateLarval: an SPI reserved for a key
// manager, with addresses but no transform. Lookup finds it, so the SPI is
// taken, but packets never use it: Input counts XfrmInStateInvalid for it
// and FindOutbound skips it. UPDATE replaces it with a mature SA (SAD.Update).
func NewLarvalSA(proto Proto, src, dst netip.Addr, spi uint32, mode Mode, reqID uint32) (*SA, error) {
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return nil, fmt.Errorf("%w: larval SA %v->%v: need two addresses of one family", ErrBadSA, src, dst)
	}
	sa := &SA{Config: SAConfig{Proto: proto, SPI: spi, Src: src, Dst: dst, Mode: mode, ReqID: reqID}, added: time.Now()}
	sa.refs.Store(1)
	sa.state.Store(uint32(StateLarval))
	return sa, nil
}

// Added returns when the SA was created.
func (sa *SA) Added() time.Time { return sa.added }

// FirstUse returns when the SA first protected or accepted a packet, or
// the zero time.
func (sa *SA) FirstUse() time.Time {
	if n := sa.firstUse.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// SetLarvalTimeout changes how long larval SAs live (0 restores the default).
func (d *SAD) SetLarvalTimeout(t time.Duration) { d.larvalTimeout.Store(int64(t)) }

// LarvalTimeout returns the larval SA lifetime.
func (d *SAD) LarvalTimeout() time.Duration {
	if t := time.Duration(d.larvalTimeout.Load()); t > 0 {
		return t
	}
	return DefaultLarvalTimeout
}

// expireLarval deletes a larval SA older than the timeout, with a hard
// expire event (Linux's xfrm_timer_handler does km_state_expired(x, 1)).
func (d *SAD) expireLarval(sa *SA, now time.Time) {
	if sa.State() == StateLarval && now.Sub(sa.added) >= d.LarvalTimeout() {
		sa.expire(true)
	}
}

// ExpireSA forces the soft or hard expiry of sa, with its event, as a key
// manager's PF_KEY EXPIRE asks. A hard expiry removes it from its SAD.
func ExpireSA(sa *SA, hard bool) { sa.expire(hard) }

// DiscardSA wipes the keys of an SA that was built but never added (a
// validation pass).
func DiscardSA(sa *SA) { sa.kill() }
