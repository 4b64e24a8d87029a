package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/ipsecstack/ipsecstack/control"
	"github.com/ipsecstack/ipsecstack/ike/config"
	ikedaemon "github.com/ipsecstack/ipsecstack/ike/daemon"
)

func init() { commands["ike"] = runIKE }

// loadIKEConfig reads an --ike file. It is ike/swanctl's Load once that
// package is on main (`loadIKEConfig = swanctl.Load`); until then --ike
// is refused with this reason.
var loadIKEConfig = func(path string) (*config.Config, error) {
	return nil, errors.New("the swanctl.conf parser (ike/swanctl) is not in this build")
}

// JSON ops of the IKE daemon on the control socket:
//
//	{"op":"ike-list"}                    → ikedaemon.Listing
//	{"op":"ike-initiate","name":"conn"}  → {} once established (or the error)
//	{"op":"ike-terminate","name":"conn"} → {} once deleted
type ikeReq struct {
	Name      string `json:"name"`
	TimeoutMS int    `json:"timeout_ms"`
}

// registerIKEOps serves the ike ops; d is nil without --ike, and the ops
// then say so.
func registerIKEOps(s *control.Server, d *ikedaemon.Daemon) {
	none := errors.New("no IKE daemon: start `ipsecstack run` with --ike FILE")
	s.HandleJSON("ike-list", func(json.RawMessage) (any, error) {
		if d == nil {
			return nil, none
		}
		return d.List(), nil
	})
	call := func(op string, fn func(context.Context, string) error) {
		s.HandleJSON(op, func(raw json.RawMessage) (any, error) {
			if d == nil {
				return nil, none
			}
			var req ikeReq
			if err := jsonReq(raw, &req); err != nil {
				return nil, err
			}
			to := time.Duration(req.TimeoutMS) * time.Millisecond
			if to <= 0 || to > 5*time.Minute {
				to = 30 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), to)
			defer cancel()
			if err := fn(ctx, req.Name); err != nil {
				return nil, err
			}
			return struct{}{}, nil
		})
	}
	call("ike-initiate", d.Initiate)
	call("ike-terminate", d.Terminate)
}

// startIKE runs the IKE daemon on the stack's --addr addresses. Its
// Close is registered after the stack's, so it runs first: the peers
// hear the deletes before the link goes.
func startIKE(ctx context.Context, d *daemon, ic *config.Config, log *slog.Logger) (*ikedaemon.Daemon, error) {
	var addrs []netip.Addr
	for _, p := range d.cfg.Addrs {
		addrs = append(addrs, p.Addr())
	}
	opts := ikedaemon.Options{Stack: d.st, Addrs: addrs, Config: ic, Log: log.With("component", "ike"), NATKeepalive: d.cfg.NATKeepalive,
		Retransmit: d.cfg.IKERetransmit}
	if d.cfg.NATKeepalive == 0 {
		opts.NATKeepalive = -1
	}
	if d.keylog != nil {
		opts.KeyLog = d.keylog.writeIKE
	}
	ikd, err := ikedaemon.New(opts)
	if err != nil {
		return nil, err
	}
	if err := ikd.Start(ctx); err != nil {
		return nil, err
	}
	d.onClose(ikd.Close)
	log.Info("ike", "file", d.cfg.IKE, "connections", len(ic.Connections))
	return ikd, nil
}

// writeIKE adds an IKE SA's Wireshark ikev2_decryption_table entry to the
// keylog. It goes in as a comment line ("# ikev2_decryption_table: …") so
// that the file still loads as an esp_sa table; `sed -n 's/^#
// ikev2_decryption_table: //p'` extracts the IKE table.
func (k *keylog) writeIKE(line string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.f == nil {
		return
	}
	if _, err := k.f.WriteString("# ikev2_decryption_table: " + line + "\n"); err != nil {
		k.log.Error("keylog write", "err", err)
	}
}

const ikeUsage = `usage: ipsecstack ike [--control PATH] [--json] list
       ipsecstack ike [--control PATH] [--timeout DURATION] initiate NAME
       ipsecstack ike [--control PATH] [--timeout DURATION] terminate NAME`

// runIKE is `ipsecstack ike list|initiate NAME|terminate NAME`.
func runIKE(args []string) error {
	fs := flag.NewFlagSet("ike", flag.ContinueOnError)
	path := fs.String("control", control.DefaultPath, "control socket `PATH`")
	asJSON := fs.Bool("json", false, "list: print the JSON answer")
	timeout := fs.Duration("timeout", 30*time.Second, "initiate, terminate: wait at most this `DURATION`")
	if err := parseFlags(fs, args, ikeUsage, os.Stdout); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return fmt.Errorf("%w: want list, initiate NAME or terminate NAME", errUsage)
	}
	var op string
	var req ikeReq
	switch {
	case rest[0] == "list" && len(rest) == 1:
		op = "ike-list"
	case (rest[0] == "initiate" || rest[0] == "terminate") && len(rest) == 2:
		op = "ike-" + rest[0]
		req = ikeReq{Name: rest[1], TimeoutMS: int(timeout.Milliseconds())}
	default:
		return fmt.Errorf("%w: want list, initiate NAME or terminate NAME", errUsage)
	}
	c, err := control.Dial(*path)
	if err != nil {
		return err
	}
	defer c.Close()
	c.Timeout = *timeout + 5*time.Second
	if op != "ike-list" {
		if err := c.Call(op, req, nil); err != nil {
			return fmt.Errorf("%s %s: %w", rest[0], req.Name, err)
		}
		fmt.Printf("%s %s: done\n", rest[0], req.Name)
		return nil
	}
	var l ikedaemon.Listing
	if err := c.Call(op, nil, &l); err != nil {
		return fmt.Errorf("list: %w", err)
	}
	if *asJSON {
		b, _ := json.MarshalIndent(l, "", "  ")
		fmt.Println(string(b))
		return nil
	}
	fmt.Print(l.Format())
	return nil
}
