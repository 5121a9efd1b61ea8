package ring

import (
	"runtime"
	"sync"
	"testing"

	"github.com/vineroute/vinequeue/shard"
	"golang.org/x/sys/unix"
)

// handOffRig is vinequeue's hot path without the queue: one producer fills a
// ring, hands it off whole through a shard.Stack when it holds a batch, and
// takes a spare from the rings the consumer drained; one consumer drains the
// handed-off rings. Its knobs isolate what a push pays for when the consumer
// runs on another core.
type handOffRig struct {
	size, batch int
	touch       bool // the consumer copies the items out (else it only moves head)
	coldest     bool // the producer reuses the ring drained longest ago (else the latest)
	park        bool // the consumer parks on a channel when idle, woken per hand-off
	rings       int  // how many rings exist
	pretouch    bool // the producer writes each line of the next batch's slots at hand-off
	prefetch    bool // the producer prefetches the next batch's slots for writing at hand-off
	cross       bool // producer on CPU 0, consumer on CPU 1 (threads locked, affinity set)
}

// onCPU locks the calling goroutine to its thread and the thread to cpu.
func onCPU(b *testing.B, cpu int) {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		b.Skip("sched_setaffinity:", err)
	}
}

func anyCPU() {
	var set unix.CPUSet
	for i := range runtime.NumCPU() {
		set.Set(i)
	}
	_ = unix.SchedSetaffinity(0, &set)
	runtime.UnlockOSThread()
}

func (c handOffRig) String() string {
	s := "nocopy"
	if c.touch {
		s = "copy"
	}
	if c.coldest {
		s += "/coldest"
	} else {
		s += "/hottest"
	}
	if c.park {
		s += "/park"
	} else {
		s += "/spin"
	}
	if c.pretouch {
		s += "/pretouch"
	}
	if c.prefetch {
		s += "/prefetch"
	}
	if c.cross {
		s += "/cross"
	}
	return s
}

func (c handOffRig) run(b *testing.B) {
	var full, free shard.Stack[SPSC[uint64], *SPSC[uint64]]
	for range c.rings - 1 {
		r, _ := NewSPSC[uint64](c.size, c.batch)
		free.Push(r)
	}
	cur, _ := NewSPSC[uint64](c.size, c.batch)
	wake := make(chan struct{}, 1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	if c.cross {
		onCPU(b, 0)
		defer anyCPU()
	}
	go func() { // the consumer
		defer wg.Done()
		if c.cross {
			onCPU(b, 1)
			defer anyCPU()
		}
		batch := make([]uint64, 0, c.batch)
		var taken []*SPSC[uint64]
		for {
			taken = full.TakeAll(taken[:0])
			for _, r := range taken {
				if c.touch {
					batch = r.Drain(batch[:0], 0)
				} else {
					r.head.Store(r.tail.Load())
				}
				free.Push(r)
			}
			if len(taken) > 0 {
				continue
			}
			select {
			case <-done:
				return
			default:
			}
			if c.park {
				select {
				case <-wake:
				case <-done:
					return
				}
			} else if !c.cross {
				runtime.Gosched() // (a locked thread would hand its P off: spin)
			}
		}
	}()
	var spares []*SPSC[uint64] // oldest drained first
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if cur.TryPush(uint64(i)) {
			continue
		}
		switch cur.Push(uint64(i)) {
		case Pushed:
			continue
		case PushedWatermark:
		case Full:
			b.Fatal("ring full: a batch should have been handed off")
		}
		for len(spares) == 0 {
			if spares = free.TakeAll(spares); len(spares) == 0 {
				runtime.Gosched()
			}
		}
		full.Push(cur)
		if c.coldest {
			cur = spares[0]
			spares = spares[1:]
		} else {
			cur = spares[len(spares)-1]
			spares = spares[:len(spares)-1]
		}
		if c.prefetch {
			cur.Prefetch(c.batch)
		}
		if c.pretouch {
			t := cur.tail.Load()
			for j := uint64(0); j < uint64(c.batch); j += 8 {
				cur.buf[(t+j)&cur.mask] = 0
			}
		}
		if c.park {
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}
	b.StopTimer()
	close(done)
	wg.Wait()
}

// BenchmarkHandOff runs the rig in the configurations that tell the slow
// mode's candidate causes apart: whether the consumer reads the slots
// (copy/nocopy), which drained ring the producer reuses (hottest/coldest),
// how the consumer waits (spin: runtime.Gosched; park: a channel, woken per
// hand-off as vinequeue's collector is), and what the producer does about the
// slot lines (pretouch: stores to each line of the next batch; prefetch:
// SPSC.Prefetch). "cross" puts the producer on CPU 0 and the consumer on CPU
// 1 (locked threads); the others leave placement to the schedulers.
func BenchmarkHandOff(b *testing.B) {
	for _, c := range []handOffRig{
		{touch: true},
		{touch: false},
		{touch: true, coldest: true},
		{touch: true, park: true},
		{touch: true, pretouch: true},
		{touch: true, prefetch: true},
		{touch: true, cross: true},
		{touch: false, cross: true},
		{touch: true, prefetch: true, cross: true},
	} {
		c.size, c.batch, c.rings = 8192, 1000, 6 // BenchmarkEnqueue's RingSize and BatchSize, ringsPerP=3 at 2 Ps
		b.Run(c.String(), c.run)
	}
}
