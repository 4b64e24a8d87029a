package main

func runReplay(o opts, r *Results) error { return nil }
func runSPD(o opts, r *Results) error    { return nil }
func runUDP(o opts, r *Results) error    { return nil }
func runTCP(o opts, r *Results) error    { return nil }
func runCores(o opts, r *Results) error  { return nil }
func writeSVGs(dir string, r *Results) error { return nil }
