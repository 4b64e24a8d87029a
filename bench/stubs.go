package main

func writeSVGs(dir string, r *Results) error { return nil }
