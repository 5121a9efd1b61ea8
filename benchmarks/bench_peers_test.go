package benchmarks

import (
	"runtime"
	"testing"
	"unsafe"

	diodes "code.cloudfoundry.org/go-diodes"
	"github.com/Workiva/go-datastructures/queue"
	"github.com/bytedance/gopkg/collection/lscq"
	"github.com/puzpuzpuz/xsync/v4"
)

// peerCapacity is the slot count of every bounded peer. VineQueue's own
// default is 1024 slots per P ring, behind an unbounded (memory-governed)
// shard; 8192 gives the bounded peers more room than one P ring.
const peerCapacity = 8192

// zenqAbsent was verified on this toolchain (go1.26) in a scratch module:
// `go build` fails with "link: github.com/alphadose/zenq/v2: invalid
// reference to runtime.dropg", and -ldflags=-checklinkname=0 only moves the
// failure to "relocation target runtime/internal/atomic.Load8 not defined"
// (that package is internal/runtime/atomic since Go 1.23).
const zenqAbsent = "github.com/alphadose/zenq/v2 v2.8.4 does not link on Go 1.26: " +
	"its go:linkname to runtime.dropg is refused, and with -checklinkname=0 " +
	"runtime/internal/atomic.Load8 is undefined (moved to internal/runtime/atomic)"

func init() {
	register(contender{
		name:   "chan",
		caveat: "buffered channel (cap 8192), one receiving goroutine; parks instead of spinning",
		start:  startChan,
	})
	register(contender{
		name: "xsync-mpmc",
		caveat: "xsync/v4 MPMCQueue (cap 8192): non-blocking Try* only, so full producers and " +
			"the empty consumer spin with runtime.Gosched (busy consumer); MPMC design used with one consumer",
		start: startXsyncMPMC,
	})
	register(contender{
		name: "xsync-umpsc",
		caveat: "xsync/v4 UMPSCQueue: unbounded (no backpressure, memory grows with the backlog); " +
			"Dequeue parks on a WaitGroup per slot",
		start: startXsyncUMPSC,
	})
	register(contender{
		name: "workiva-ring",
		caveat: "Workiva go-datastructures queue.RingBuffer (cap 8192): interface{} payload " +
			"(a uint64 ≥ 256 boxes: 1 alloc/item); Put/Get spin with runtime.Gosched (busy consumer)",
		start: startWorkiva,
	})
	register(contender{
		name: "diodes",
		caveat: "go-diodes ManyToOne: lossy by design (writers overwrite what the reader has not read); " +
			"sized to hold the whole run so it drops nothing, i.e. unbounded memory here — drops are counted; " +
			"unsafe.Pointer payload: one *uint64 plus one bucket alloc per item; consumer spins on TryNext",
		lossy: true,
		start: startDiodes,
	})
	register(contender{
		name: "lscq",
		caveat: "bytedance/gopkg lscq.Uint64Queue: unbounded linked SCQ (no backpressure); " +
			"non-blocking Dequeue, so the consumer spins with runtime.Gosched",
		start: startLSCQ,
	})
	register(contender{
		name:   "zenq",
		caveat: "alphadose/zenq/v2 v2.8.4",
		absent: zenqAbsent,
	})
}

func startChan(tb testing.TB, rc runConfig) instance {
	ch := make(chan uint64, peerCapacity)
	return instance{
		produce: func(first, count uint64) {
			for v := first + 1; v <= first+count; v++ {
				ch <- v
			}
		},
		consume: func(want uint64) tally {
			s := newSink(rc.batch)
			for i := uint64(0); i < want; i++ {
				s.take(<-ch)
			}
			return s.result()
		},
		close: func() {},
	}
}

func startXsyncMPMC(tb testing.TB, rc runConfig) instance {
	q := xsync.NewMPMCQueue[uint64](peerCapacity)
	return spinning(rc, q.TryEnqueue, q.TryDequeue)
}

// spinning adapts a queue with non-blocking enqueue and dequeue: both sides
// retry with runtime.Gosched (a busy consumer, noted in the caveats).
func spinning(rc runConfig, tryEnqueue func(uint64) bool, tryDequeue func() (uint64, bool)) instance {
	return instance{
		produce: func(first, count uint64) {
			for v := first + 1; v <= first+count; v++ {
				for !tryEnqueue(v) {
					runtime.Gosched()
				}
			}
		},
		consume: func(want uint64) tally {
			s := newSink(rc.batch)
			for i := uint64(0); i < want; {
				v, ok := tryDequeue()
				if !ok {
					runtime.Gosched()
					continue
				}
				s.take(v)
				i++
			}
			return s.result()
		},
		close: func() {},
	}
}

func startXsyncUMPSC(tb testing.TB, rc runConfig) instance {
	q := xsync.NewUMPSCQueue[uint64]()
	return instance{
		produce: func(first, count uint64) {
			for v := first + 1; v <= first+count; v++ {
				q.Enqueue(v)
			}
		},
		consume: func(want uint64) tally {
			s := newSink(rc.batch)
			for i := uint64(0); i < want; i++ {
				s.take(q.Dequeue())
			}
			return s.result()
		},
		close: func() {},
	}
}

func startWorkiva(tb testing.TB, rc runConfig) instance {
	rb := queue.NewRingBuffer(peerCapacity)
	return instance{
		produce: func(first, count uint64) {
			for v := first + 1; v <= first+count; v++ {
				if err := rb.Put(v); err != nil {
					tb.Errorf("workiva Put: %v", err)
					return
				}
			}
		},
		consume: func(want uint64) tally {
			s := newSink(rc.batch)
			for i := uint64(0); i < want; i++ {
				x, err := rb.Get()
				if err != nil {
					tb.Errorf("workiva Get: %v", err)
					break
				}
				s.take(x.(uint64))
			}
			return s.result()
		},
		close: rb.Dispose,
	}
}

func startDiodes(tb testing.TB, rc runConfig) instance {
	// One slot per item: the ring never wraps, so the reader can never be
	// lapped. A smaller ring drops (Alert) whenever the producers run ahead.
	size := int(rc.items)
	if size < 64 {
		size = 64
	}
	var dropped uint64
	d := diodes.NewManyToOne(size, diodes.AlertFunc(func(missed int) { dropped += uint64(missed) }))
	return instance{
		produce: func(first, count uint64) {
			for v := first + 1; v <= first+count; v++ {
				p := new(uint64)
				*p = v
				d.Set(diodes.GenericDataType(unsafe.Pointer(p)))
			}
		},
		consume: func(want uint64) tally {
			s := newSink(rc.batch)
			for i := uint64(0); i+dropped < want; {
				p, ok := d.TryNext()
				if !ok {
					runtime.Gosched()
					continue
				}
				s.take(*(*uint64)(unsafe.Pointer(p)))
				i++
			}
			t := s.result()
			t.dropped = dropped // the alerter runs on this (the reading) goroutine
			return t
		},
		close: func() {},
	}
}

func startLSCQ(tb testing.TB, rc runConfig) instance {
	q := lscq.NewUint64()
	return spinning(rc, q.Enqueue, q.Dequeue)
}
