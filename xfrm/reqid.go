package xfrm

// MaxManualReqID is the highest reqid left to manual keying (KAME's and
// Linux's IPSEC_MANUAL_REQID_MAX). A unique template added without a
// reqid gets one above it, unused by any policy, as Linux's af_key assigns
// with gen_reqid: the policy then binds only SAs made for it (the reqid an
// ACQUIRE carries), which is what "unique" means. Without it, a unique
// template would match any SA and act as require.
const MaxManualReqID = 0x3fff

// assignReqIDs gives each unique template of np without a reqid its own.
// On an update (old non-nil) a template inherits the reqid the SPD gave
// old's template at the same position when both are unique with the same
// protocol and mode; a manual reqid the update leaves out is not kept.
// Called with s.mu held; np is the SPD's own copy.
func (s *SPD) assignReqIDs(np, old *Policy) {
	for i := range np.Templates {
		t := &np.Templates[i]
		if t.Level != LevelUnique || t.ReqID != 0 {
			continue
		}
		if old != nil && i < len(old.Templates) {
			o := &old.Templates[i]
			if o.Level == LevelUnique && o.Proto == t.Proto && o.Mode == t.Mode && o.ReqID > MaxManualReqID {
				t.ReqID = o.ReqID
				continue
			}
		}
		t.ReqID = s.genReqID()
	}
}

// genReqID returns the next reqid above MaxManualReqID that no stored
// policy uses, wrapping as Linux's gen_reqid does. The count of used
// reqids is bounded by the policies held, so the search ends.
func (s *SPD) genReqID() uint32 {
	for {
		s.reqid++
		if s.reqid <= MaxManualReqID {
			s.reqid = MaxManualReqID + 1
		}
		if s.reqids[s.reqid] == 0 {
			return s.reqid
		}
	}
}

// countReqIDs adds d to the use count of each reqid p's templates name.
func (s *SPD) countReqIDs(p *Policy, d int) {
	for i := range p.Templates {
		r := p.Templates[i].ReqID
		if r == 0 {
			continue
		}
		if n := s.reqids[r] + d; n > 0 {
			s.reqids[r] = n
		} else {
			delete(s.reqids, r)
		}
	}
}
