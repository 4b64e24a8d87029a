package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// Client is a connection to a control socket.
type Client struct {
	c   *net.UnixConn
	buf []byte
	// Timeout bounds Call and Recv; 0 waits forever.
	Timeout time.Duration
	// pending holds PF_KEY messages that arrived while Call waited for
	// its JSON reply; Recv returns them first.
	pending [][]byte
}

// Dial connects to the control socket at path.
func Dial(path string) (*Client, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return &Client{c: c, buf: make([]byte, maxMsg), Timeout: 30 * time.Second}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

// Send sends one message (a PF_KEY message or a JSON request).
func (c *Client) Send(msg []byte) error {
	_, err := c.c.Write(msg)
	return err
}

// Recv returns the next message from the server.
func (c *Client) Recv() ([]byte, error) {
	if len(c.pending) > 0 {
		m := c.pending[0]
		c.pending = c.pending[1:]
		return m, nil
	}
	return c.recv()
}

func (c *Client) recv() ([]byte, error) {
	if c.Timeout > 0 {
		c.c.SetReadDeadline(time.Now().Add(c.Timeout))
	} else {
		c.c.SetReadDeadline(time.Time{})
	}
	n, err := c.c.Read(c.buf)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), c.buf[:n]...), nil
}

// maxPending bounds the PF_KEY messages kept for Recv while Call waits;
// a client that never calls Recv keeps only the newest ones.
const maxPending = 1024

// Call sends the JSON request {"op": op, ...req's fields} and decodes the
// result into resp (which may be nil). PF_KEY messages arriving meanwhile
// are kept for Recv.
func (c *Client) Call(op string, req any, resp any) error {
	res, _, err := c.call(op, req, "")
	if err != nil {
		return err
	}
	if resp != nil && len(res) > 0 {
		return json.Unmarshal(res, resp)
	}
	return nil
}

// CallPages calls a paged op (one whose replies carry "next") until its
// last page, passing each page's result to fn in order.
func (c *Client) CallPages(op string, req any, fn func(page json.RawMessage) error) error {
	after := ""
	for {
		res, next, err := c.call(op, req, after)
		if err != nil {
			return err
		}
		if err := fn(res); err != nil {
			return err
		}
		if next == "" {
			return nil
		}
		if next == after {
			return fmt.Errorf("control: %s: paging does not advance", op)
		}
		after = next
	}
}

func (c *Client) call(op string, req any, after string) (json.RawMessage, string, error) {
	fields := map[string]json.RawMessage{}
	if req != nil {
		b, err := json.Marshal(req)
		if err != nil {
			return nil, "", err
		}
		if err := json.Unmarshal(b, &fields); err != nil {
			return nil, "", fmt.Errorf("control: request must be a JSON object: %w", err)
		}
	}
	opb, _ := json.Marshal(op)
	fields["op"] = opb
	if after != "" {
		ab, _ := json.Marshal(after)
		fields["after"] = ab
	}
	b, err := json.Marshal(fields)
	if err != nil {
		return nil, "", err
	}
	if err := c.Send(b); err != nil {
		return nil, "", err
	}
	for {
		m, err := c.recv()
		if err != nil {
			return nil, "", err
		}
		if len(m) == 0 || m[0] != '{' {
			if len(c.pending) >= maxPending {
				c.pending = c.pending[1:]
			}
			c.pending = append(c.pending, m)
			continue
		}
		var r struct {
			OK     bool            `json:"ok"`
			Result json.RawMessage `json:"result"`
			Error  string          `json:"error"`
			Next   string          `json:"next"`
		}
		if err := json.Unmarshal(m, &r); err != nil {
			return nil, "", fmt.Errorf("control: bad reply: %w", err)
		}
		if !r.OK {
			return nil, "", errors.New(r.Error)
		}
		return r.Result, r.Next, nil
	}
}
