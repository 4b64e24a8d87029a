package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/ipsecstack/ipsecstack/control"
)

func init() { commands["stats"] = runStats }

// runStats is `ipsecstack stats [--control PATH]`: the running stack's
// xfrm counters in /proc/net/xfrm_stat format (JSON op "stats").
func runStats(args []string) error {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	path := fs.String("control", control.DefaultPath, "control socket `PATH`")
	if err := parseFlags(fs, args, "usage: ipsecstack stats [--control PATH]", os.Stdout); err != nil {
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
	var stats []statJSON
	if err := c.Call("stats", nil, &stats); err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	for _, s := range stats {
		fmt.Printf("%-24s\t%d\n", s.Name, s.Value)
	}
	return nil
}
