package xfrm

// Hold takes a reference on the SA for a reader outside the packet path
// (a PF_KEY DUMP or GET copying its keys): while it is held, deleting the
// SA does not wipe the keys under the reader. It reports false, taking
// nothing, once the SA is dead (deleted, flushed or hard-expired): such an
// SA is no longer listed. Every successful Hold must be paired with one
// Release.
func (sa *SA) Hold() bool { return sa.tryGet() }

// Release drops a reference taken by Hold; the last reference of a dead SA
// wipes its keys.
func (sa *SA) Release() { sa.put() }
