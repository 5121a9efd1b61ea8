package governor

import (
	"runtime/metrics"
	"strconv"
)

// Measure chooses what the governor weighs against the limit.
type Measure int

const (
	// MeasureAuto, the zero value, picks by Limit: MeasureProcessMemory when
	// Limit is 0 (a detected limit bounds the whole process, so the whole
	// process is what must stay under it), MeasureQueueBytes when Limit is
	// set (an explicit Limit is a budget for the queue's own items).
	MeasureAuto Measure = iota
	// MeasureProcessMemory weighs the Go runtime's memory (all it has mapped
	// minus the heap it has returned to the OS, sampled every
	// SampleInterval and on Refresh), moved by Add between samples. Use it
	// when the limit is shared with the application, as a container's is:
	// the application's own heap growing toward the limit then raises the
	// level and slows, rejects or spills the queue's intake before the
	// kernel kills the process. With an explicit Limit it reads "keep the
	// whole process under Limit". Memory the runtime does not manage (cgo,
	// mmap by other libraries) is not seen; mapped WAL pages are page cache
	// and are not counted either.
	MeasureProcessMemory
	// MeasureQueueBytes weighs only the bytes the queue reports through
	// Add/Sub (by its SizeOf). Use it with an explicit Limit that is the
	// queue's budget; against a detected limit it lets the queue fill most
	// of memory while ignoring what the rest of the process uses. No
	// sampling: the governor's goroutine only picks up level changes.
	MeasureQueueBytes
)

// String returns the measure's name.
func (m Measure) String() string {
	switch m {
	case MeasureAuto:
		return "auto"
	case MeasureProcessMemory:
		return "process-memory"
	case MeasureQueueBytes:
		return "queue-bytes"
	}
	return "Measure(" + strconv.Itoa(int(m)) + ")"
}

// The runtime/metrics read by MeasureProcessMemory; doc.go says why these.
const (
	metricTotal    = "/memory/classes/total:bytes"
	metricReleased = "/memory/classes/heap/released:bytes"
)

// processSampler reads the process's memory from runtime/metrics. Not safe
// for concurrent use (the samples slice is reused): the governor calls it
// under sampleMu.
type processSampler struct {
	samples [2]metrics.Sample
}

func newProcessSampler() *processSampler {
	p := &processSampler{}
	p.samples[0].Name = metricTotal
	p.samples[1].Name = metricReleased
	return p
}

// read returns total minus released, or -1 if this runtime lacks either
// metric (then the governor counts the queue's bytes only).
func (p *processSampler) read() int64 {
	metrics.Read(p.samples[:])
	total, released := p.samples[0].Value, p.samples[1].Value
	if total.Kind() != metrics.KindUint64 || released.Kind() != metrics.KindUint64 {
		return -1
	}
	t, r := total.Uint64(), released.Uint64()
	if r > t {
		return 0
	}
	return int64(min(t-r, 1<<62))
}
