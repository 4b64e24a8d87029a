package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/ipsecstack/ipsecstack/control"
)

func init() { commands["sas"] = runSAs }

// runSAs is `ipsecstack sas [--control PATH]`: the running stack's SAs
// (no keys) with their traffic counters, one per line, read page by page
// (JSON op "sas") so that any number of SAs can be listed.
func runSAs(args []string) error {
	fs := flag.NewFlagSet("sas", flag.ContinueOnError)
	path := fs.String("control", control.DefaultPath, "control socket `PATH`")
	if err := parseFlags(fs, args, "usage: ipsecstack sas [--control PATH]", os.Stdout); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	c, err := control.Dial(*path)
	if err != nil {
		return err
	}
	defer c.Close()
	c.Timeout = 10 * time.Second
	return c.CallPages("sas", nil, func(page json.RawMessage) error {
		var sas []saJSON
		if err := json.Unmarshal(page, &sas); err != nil {
			return fmt.Errorf("sas: %w", err)
		}
		for _, s := range sas {
			fmt.Printf("%s %s spi %s %s->%s %s packets %d bytes %d\n", s.Proto, s.Mode, s.SPI, s.Src, s.Dst, s.State, s.Packets, s.Bytes)
		}
		return nil
	})
}
