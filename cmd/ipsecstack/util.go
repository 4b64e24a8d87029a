package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"
)

// every calls f each period until ctx ends.
func every(ctx context.Context, period time.Duration, f func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// parseFlags parses args with fs, silencing fs's own output: -h prints
// usage and the flags to stdout and gives flag.ErrHelp; any other problem
// is an errUsage error, which main reports on one line.
func parseFlags(fs *flag.FlagSet, args []string, usage string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintln(stdout, usage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return err
	}
	return fmt.Errorf("%w: %v", errUsage, err)
}
