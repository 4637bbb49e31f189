// Package bench measures picogate side by side with the proxies a user would otherwise run in front of
// the Kubernetes API (the original design's nginx, a tuned nginx, kubectl proxy) and with direct HTTPS, all against
// one real local control plane. Every target gets the same requests from the same lean load generator,
// in interleaved rounds so the machine's drift cancels out; the proxies' own CPU and memory are read
// from /proc. The result is written as docs/benchmarks.json and docs/benchmarks.md.
package bench
