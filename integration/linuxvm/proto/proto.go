// Package proto is what the linuxvm host and its guest agent (a separate
// static binary) agree on: the control channel's name and messages, and the
// ports of the agent's services.
package proto

// PortName is the virtio-serial port name the host creates and the agent
// looks for.
const PortName = "ipsecstack.agent"

// Ports of the agent's services in the guest.
const (
	EchoPort = 7    // TCP and UDP echo
	SinkPort = 9000 // TCP sink answering with SHA-256
	NATTPort = 4500 // ESP in UDP (RFC 3948): UDP_ENCAP_ESPINUDP sockets, on request
)

// Request is one control request, a JSON line from the host.
type Request struct {
	ID        uint64   `json:"id"`
	Op        string   `json:"op"`
	Cmd       string   `json:"cmd,omitempty"`
	Path      string   `json:"path,omitempty"`
	Msgs      []string `json:"msgs,omitempty"` // pfkey: hex-encoded messages
	TimeoutMs int64    `json:"timeout_ms,omitempty"`
}

// Response answers the Request with the same ID, a JSON line from the
// agent.
type Response struct {
	ID     uint64 `json:"id"`
	Stdout string `json:"stdout,omitempty"`
	Stderr string `json:"stderr,omitempty"`
	Exit   int    `json:"exit"`
	Err    string `json:"err,omitempty"`
}
