package stack

import (
	"gvisor.dev/gvisor/pkg/buffer"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// fragment splits the IP packet ip, after IPsec, into fragments of at most
// mtu bytes (xfrm.Fragment), each in a view of its own. A DF packet is
// refused (xfrm.ErrDontFragment): the caller (Endpoint.sendWire) decides,
// and clears DF when it may.
func fragment(ip []byte, mtu int, id uint32) ([]*buffer.View, error) {
	var a viewAlloc
	if _, err := xfrm.Fragment(ip, mtu, id, &a); err != nil {
		a.release()
		return nil, err
	}
	return a.views, nil
}
