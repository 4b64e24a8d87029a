package main

import (
	"encoding/json"
	"fmt"
)

func init() { commands["sas"] = runSAs }

// runSAs is `ipsecstack sas [--control PATH]`: the running stack's SAs
// (no keys) with their traffic counters, one per line, read page by page
// (JSON op "sas") so that any number of SAs can be listed.
func runSAs(args []string) error {
	c, err := dialFromArgs("sas", args)
	if err != nil {
		return err
	}
	defer c.Close()
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
