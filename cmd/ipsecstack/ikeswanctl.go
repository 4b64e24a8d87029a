package main

import "github.com/ipsecstack/ipsecstack/ike/swanctl"

// ike/swanctl is in the build: --ike files are read with it (the stub in
// ike.go refused them).
func init() { loadIKEConfig = swanctl.Load }
