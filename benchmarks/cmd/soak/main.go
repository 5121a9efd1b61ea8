// Command soak puts a VineQueue under sustained mixed load and checks, at the
// end, that every accepted item was delivered exactly once and that every
// key's items arrived in order.
//
// The load, all at once for -duration:
//   - tight producers: Enqueue in a loop (one per P);
//   - bursty producers: EnqueueBatch of 256, then a short pause;
//   - keyed producers: EnqueueKey over 8 keys each (FIFO per key is checked);
//   - churn: slots whose goroutine enqueues 1000 items and exits, replaced at
//     once by a new goroutine (so items come from ever new goroutines);
//   - producers pause while the backlog exceeds -max-buffered items (so the
//     soak's memory stays bounded even before the governor pushes back);
//   - GOMAXPROCS toggles between n and n+1 every 30 s (rings must grow);
//   - Send (2 workers) sleeps now and then and fails one batch in 200
//     (retried by the queue's policy).
//
// Every item is producer<<48 | seq. Each producer counts and sums what was
// accepted (Enqueue returned nil); Send counts and sums what was delivered
// (Send returned nil), per producer. Any difference, any drop, or any key out
// of order fails the run (exit status 1). Every -report it prints the
// delivered and accepted rates over the last interval.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vineroute/vinequeue"
)

const (
	seqBits   = 48
	seqMask   = 1<<seqBits - 1
	maxSlots  = 256 // producer ids
	keysPerKP = 8
	burstSize = 256
	churnRun  = 1000
)

type counter struct {
	n, sum atomic.Uint64
	_      [48]byte // keep producers' counters off each other's cache lines
}

type soak struct {
	q *vinequeue.Queue[uint64]

	accepted  [maxSlots]counter
	delivered [maxSlots]counter
	rejected  atomic.Uint64
	dropped   atomic.Uint64
	sendFails atomic.Uint64

	keyedLo, keyedHi int // producer ids [lo, hi) use EnqueueKey
	keyMu            sync.Mutex
	lastSeq          map[uint64]uint64 // key → last delivered seq
	outOfOrder       atomic.Uint64
	firstDisorder    atomic.Value // string

	// paused is set by pace while the backlog is above -max-buffered: the
	// producers then wait, a client-side back-pressure that keeps the soak's
	// memory bounded whatever the governor does. The ticks give the share of
	// time paused per report.
	paused                 atomic.Bool
	pausedTicks, paceTicks atomic.Uint64
}

func (s *soak) pace(ctx context.Context, maxBuffered uint64) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.paused.Store(false)
			return
		case <-t.C:
			p := s.q.Stats().Buffered > maxBuffered
			s.paused.Store(p)
			s.paceTicks.Add(1)
			if p {
				s.pausedTicks.Add(1)
			}
		}
	}
}

func main() {
	duration := flag.Duration("duration", 10*time.Minute, "how long to keep the load on (SOAK_DURATION in make soak)")
	report := flag.Duration("report", 10*time.Second, "progress interval")
	flip := flag.Bool("flip-gomaxprocs", true, "toggle GOMAXPROCS between n and n+1 every 30s")
	memLimit := flag.Int64("memory", 256<<20, "Config.Memory.Limit in bytes")
	maxBuffered := flag.Uint64("max-buffered", 4<<20, "producers pause while Stats().Buffered is above this (0: never)")
	flag.Parse()
	if err := run(*duration, *report, *flip, *memLimit, *maxBuffered); err != nil {
		fmt.Fprintln(os.Stderr, "soak: FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("soak: PASS")
}

func run(duration, report time.Duration, flip bool, memLimit int64, maxBuffered uint64) error {
	// The producer-id layout (procs tight, 2 bursty, 2 keyed, then churn) is
	// fixed before any producer starts: Send reads keyedLo and keyedHi, so
	// they must not change once items can flow.
	procs := runtime.GOMAXPROCS(0)
	s := &soak{lastSeq: map[uint64]uint64{}, keyedLo: procs + 2, keyedHi: procs + 4}
	q, err := vinequeue.New(vinequeue.Config[uint64]{
		Send:          s.send,
		Workers:       2,
		FlushInterval: 50 * time.Millisecond,
		Memory:        vinequeue.MemoryConfig{Limit: memLimit, Policy: vinequeue.Reject},
		Retry: vinequeue.RetryPolicy{MaxAttempts: 20, InitialBackoff: time.Millisecond,
			MaxBackoff: 20 * time.Millisecond},
		OnDrop: func(batch []uint64, reason error) { s.dropped.Add(uint64(len(batch))) },
	})
	if err != nil {
		return fmt.Errorf("vinequeue.New: %w", err)
	}
	s.q = q

	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	id := 0
	spawn := func(n int, f func(ctx context.Context, id int)) {
		for range n {
			wg.Add(1)
			go func(id int) { defer wg.Done(); f(ctx, id) }(id)
			id++
		}
	}
	spawn(procs, s.tight)
	spawn(2, s.bursty)
	spawn(2, s.keyed) // ids [keyedLo, keyedHi)
	spawn(16, s.churn)
	if flip {
		wg.Add(1)
		go func() { defer wg.Done(); flipProcs(ctx, procs) }()
	}
	if maxBuffered > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); s.pace(ctx, maxBuffered) }()
	}

	fmt.Printf("soak: %v of mixed load, %d producer slots, GOMAXPROCS %d, report every %v\n", duration, id, procs, report)
	fmt.Printf("%8s %14s %14s %12s %8s %8s %10s %8s %8s\n", "t", "delivered/s", "accepted/s", "buffered", "level", "batch", "rejected", "retries", "paused")
	start := time.Now()
	tick := time.NewTicker(report)
	var lastDel, lastAcc uint64
	last := start
	progress := func(now time.Time) {
		st := q.Stats()
		acc := s.totalAccepted()
		dt := now.Sub(last).Seconds()
		fmt.Printf("%7.0fs %14.0f %14.0f %12d %8s %8d %10d %8d %7.0f%%\n", now.Sub(start).Seconds(),
			float64(st.Delivered-lastDel)/dt, float64(acc-lastAcc)/dt, st.Buffered, st.Level, st.BatchSize, s.rejected.Load(), st.Retries,
			100*float64(s.pausedTicks.Swap(0))/max(1, float64(s.paceTicks.Swap(0))))
		lastDel, lastAcc, last = st.Delivered, acc, now
	}
loop:
	for {
		select {
		case now := <-tick.C:
			progress(now)
		case <-ctx.Done():
			break loop
		}
	}
	tick.Stop()
	wg.Wait()
	runtime.GOMAXPROCS(procs)

	stopCtx, stopCancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer stopCancel()
	if err := q.Stop(stopCtx); err != nil {
		return fmt.Errorf("stopping the queue: %w", err)
	}
	progress(time.Now())
	return s.verify(time.Since(start))
}

func (s *soak) totalAccepted() uint64 {
	var t uint64
	for i := range s.accepted {
		t += s.accepted[i].n.Load()
	}
	return t
}

// accept records an accepted item of producer id.
func (s *soak) accept(id int, v uint64) {
	s.accepted[id].n.Add(1)
	s.accepted[id].sum.Add(v)
}

// enqueue retries on ErrFull (the governor's back-pressure) and reports
// whether the item was accepted before ctx ended.
func (s *soak) enqueue(ctx context.Context, f func() error) bool {
	for s.paused.Load() && ctx.Err() == nil {
		time.Sleep(200 * time.Microsecond)
	}
	for {
		err := f()
		if err == nil {
			return true
		}
		if !errors.Is(err, vinequeue.ErrFull) || ctx.Err() != nil {
			return false
		}
		s.rejected.Add(1)
		time.Sleep(100 * time.Microsecond)
	}
}

func item(id int, seq uint64) uint64 { return uint64(id)<<seqBits | seq&seqMask }

func (s *soak) tight(ctx context.Context, id int) {
	for seq := uint64(1); ; seq++ {
		if seq%4096 == 0 && ctx.Err() != nil {
			return
		}
		v := item(id, seq)
		if !s.enqueue(ctx, func() error { return s.q.Enqueue(v) }) {
			return
		}
		s.accept(id, v)
	}
}

func (s *soak) bursty(ctx context.Context, id int) {
	buf := make([]uint64, burstSize)
	rng := rand.New(rand.NewPCG(uint64(id), 1))
	for seq := uint64(1); ctx.Err() == nil; {
		for i := range buf {
			buf[i] = item(id, seq)
			seq++
		}
		for s.paused.Load() && ctx.Err() == nil {
			time.Sleep(200 * time.Microsecond)
		}
		rest := buf
		for len(rest) > 0 {
			n, err := s.q.EnqueueBatch(rest)
			for _, v := range rest[:n] {
				s.accept(id, v)
			}
			rest = rest[n:]
			if err != nil {
				if !errors.Is(err, vinequeue.ErrFull) || ctx.Err() != nil {
					return
				}
				s.rejected.Add(uint64(len(rest)))
				time.Sleep(100 * time.Microsecond)
			}
		}
		time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
	}
}

func (s *soak) keyed(ctx context.Context, id int) {
	for seq := uint64(1); ctx.Err() == nil; seq++ {
		v := item(id, seq)
		key := uint64(id)<<8 | seq%keysPerKP
		if !s.enqueue(ctx, func() error { return s.q.EnqueueKey(key, v) }) {
			return
		}
		s.accept(id, v)
	}
}

// churn keeps one slot busy with a succession of short-lived goroutines.
func (s *soak) churn(ctx context.Context, id int) {
	seq := uint64(1)
	for ctx.Err() == nil {
		done := make(chan uint64)
		go func(first uint64) {
			next := first
			defer func() { done <- next }()
			for range churnRun {
				v := item(id, next)
				if !s.enqueue(ctx, func() error { return s.q.Enqueue(v) }) {
					return
				}
				s.accept(id, v)
				next++
			}
		}(seq)
		seq = <-done
	}
}

func flipProcs(ctx context.Context, n int) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	up := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			up = !up
			if up {
				runtime.GOMAXPROCS(n + 1)
			} else {
				runtime.GOMAXPROCS(n)
			}
		}
	}
}

// send is the sink: it sometimes stalls, fails one batch in 200, and
// otherwise records every item per producer and checks per-key order.
func (s *soak) send(ctx context.Context, batch []uint64) error {
	r := rand.Uint64()
	if r%200 == 0 {
		s.sendFails.Add(1)
		return errors.New("soak: transient send failure")
	}
	if r%10 == 1 {
		time.Sleep(time.Duration(r>>32%200) * time.Microsecond)
	}
	var n, sum [maxSlots]uint64
	var keyed bool
	for _, v := range batch {
		id := int(v >> seqBits)
		n[id]++
		sum[id] += v
		keyed = keyed || (id >= s.keyedLo && id < s.keyedHi)
	}
	if keyed {
		s.checkOrder(batch)
	}
	for id := range maxSlots {
		if n[id] != 0 {
			s.delivered[id].n.Add(n[id])
			s.delivered[id].sum.Add(sum[id])
		}
	}
	return nil
}

func (s *soak) checkOrder(batch []uint64) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	for _, v := range batch {
		id := int(v >> seqBits)
		if id < s.keyedLo || id >= s.keyedHi {
			continue
		}
		seq := v & seqMask
		key := uint64(id)<<8 | seq%keysPerKP
		if last := s.lastSeq[key]; seq <= last {
			if s.outOfOrder.Add(1) == 1 {
				s.firstDisorder.Store(fmt.Sprintf("key %#x: seq %d delivered after %d", key, seq, last))
			}
		}
		s.lastSeq[key] = seq
	}
}

func (s *soak) verify(elapsed time.Duration) error {
	var errs []error
	var acc, del uint64
	for id := range maxSlots {
		a, d := &s.accepted[id], &s.delivered[id]
		acc += a.n.Load()
		del += d.n.Load()
		if a.n.Load() != d.n.Load() || a.sum.Load() != d.sum.Load() {
			errs = append(errs, fmt.Errorf("producer %d: accepted %d items, delivered %d (sums %d vs %d)",
				id, a.n.Load(), d.n.Load(), a.sum.Load(), d.sum.Load()))
		}
	}
	st := s.q.Stats()
	fmt.Printf("soak: %v: accepted %d, delivered %d (%.0f items/s), rejected (retried) %d, send failures %d, retries %d, dropped %d, out of order %d\n",
		elapsed.Round(time.Millisecond), acc, del, float64(del)/elapsed.Seconds(), s.rejected.Load(),
		s.sendFails.Load(), st.Retries, s.dropped.Load(), s.outOfOrder.Load())
	if st.Enqueued != acc || st.Delivered != acc {
		errs = append(errs, fmt.Errorf("stats: Enqueued %d, Delivered %d, want both %d", st.Enqueued, st.Delivered, acc))
	}
	if d := s.dropped.Load(); d != 0 || st.Dropped != 0 {
		errs = append(errs, fmt.Errorf("%d items dropped (Stats.Dropped %d)", d, st.Dropped))
	}
	if n := s.outOfOrder.Load(); n != 0 {
		errs = append(errs, fmt.Errorf("%d keyed items out of order, first: %v", n, s.firstDisorder.Load()))
	}
	return errors.Join(errs...)
}
