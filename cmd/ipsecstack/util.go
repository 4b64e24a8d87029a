package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ipsecstack/ipsecstack/control"
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

// dialFromArgs parses `ipsecstack NAME [--control PATH]` (no other flags,
// no arguments) and dials the running daemon's control socket, with a
// 10 s timeout per call.
func dialFromArgs(name string, args []string) (*control.Client, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	path := fs.String("control", control.DefaultPath, "control socket `PATH`")
	if err := parseFlags(fs, args, "usage: ipsecstack "+name+" [--control PATH]", os.Stdout); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	c, err := control.Dial(*path)
	if err != nil {
		return nil, err
	}
	c.Timeout = 10 * time.Second
	return c, nil
}
