//go:build race

package control

// raceEnabled: the race detector multiplies memory and time (8-10x).
const raceEnabled = true
