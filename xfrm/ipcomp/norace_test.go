//go:build !race

package ipcomp

const raceEnabled = false
