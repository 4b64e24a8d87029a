package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"
)

// wgPair is two wireguard-go devices, each on its own gVisor netstack
// (tun/netstack), joined by the in-memory binds of conn/bindtest: the
// userspace WireGuard a user would pick instead of ipsecstack.
type wgPair struct {
	dev          [2]*device.Device
	net          [2]*netstack.Net
	addrA, addrB netip.Addr
}

func wgKeys() (priv, pub [32]byte, err error) {
	if _, err = rand.Read(priv[:]); err != nil {
		return
	}
	priv[0] &= 248
	priv[31] = priv[31]&127 | 64
	p, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	copy(pub[:], p)
	return
}

// newWGPair builds the pair with the given tunnel MTU.
func newWGPair(mtu int) (*wgPair, error) {
	w := &wgPair{addrA: netip.MustParseAddr("10.9.0.1"), addrB: netip.MustParseAddr("10.9.0.2")}
	binds := bindtest.NewChannelBinds()
	var priv, pub [2][32]byte
	for i := range priv {
		var err error
		if priv[i], pub[i], err = wgKeys(); err != nil {
			return nil, err
		}
	}
	addrs := []netip.Addr{w.addrA, w.addrB}
	for i := 0; i < 2; i++ {
		tdev, tnet, err := netstack.CreateNetTUN([]netip.Addr{addrs[i]}, nil, mtu)
		if err != nil {
			w.Close()
			return nil, err
		}
		w.net[i] = tnet
		w.dev[i] = device.NewDevice(tdev, binds[i], device.NewLogger(device.LogLevelSilent, ""))
		// bindtest: bind i reaches the other bind through endpoint i+1.
		cfg := fmt.Sprintf("private_key=%s\nlisten_port=0\nreplace_peers=true\npublic_key=%s\nallowed_ip=%s/32\nendpoint=127.0.0.1:%d\n",
			hex.EncodeToString(priv[i][:]), hex.EncodeToString(pub[1-i][:]), addrs[1-i], i+1)
		if err := w.dev[i].IpcSet(cfg); err != nil {
			w.Close()
			return nil, fmt.Errorf("wireguard device %d: %w", i, err)
		}
		if err := w.dev[i].Up(); err != nil {
			w.Close()
			return nil, err
		}
	}
	return w, nil
}

func (w *wgPair) Close() {
	for _, d := range w.dev {
		if d != nil {
			d.Close()
		}
	}
}
