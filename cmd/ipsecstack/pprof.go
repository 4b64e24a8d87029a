package main

import (
	"net/http"
	"net/http/pprof"
)

// pprofHandler serves Go's profiles (--pprof ADDR) on their own mux, not
// http.DefaultServeMux, so that importing net/http/pprof never exposes
// them on the metrics listener.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
