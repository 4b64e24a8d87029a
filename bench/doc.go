// Package bench holds ipsecstack's benchmarks. Times on shared machines are
// noisy, so every benchmark here measures the thing and its baseline side by
// side in the same run and reports the ratio:
//
//	go test -run '^$' -bench . -benchtime 2x ./bench
//
// BenchmarkTransform: ESP seal+open through the SA transform against the
// raw AEAD seal+open on the same buffer (ratio, allocations per packet).
// BenchmarkTCP: TCP bulk transfer between two gVisor stacks over the
// in-memory link, with ESP against without (ratio).
package bench
