package main

import "fmt"

func init() { commands["stats"] = runStats }

// runStats is `ipsecstack stats [--control PATH]`: the running stack's
// xfrm counters in /proc/net/xfrm_stat format (JSON op "stats").
func runStats(args []string) error {
	c, err := dialFromArgs("stats", args)
	if err != nil {
		return err
	}
	defer c.Close()
	var stats []statJSON
	if err := c.Call("stats", nil, &stats); err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	for _, s := range stats {
		fmt.Printf("%-24s\t%d\n", s.Name, s.Value)
	}
	return nil
}
