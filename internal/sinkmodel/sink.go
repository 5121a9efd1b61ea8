package sinkmodel

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Clock is where a Sink's time comes from and how it waits out a latency.
type Clock interface {
	// Now is the time since the clock's origin.
	Now() time.Duration
	// Wait lets d pass, or returns ctx.Err() if ctx ends first.
	Wait(ctx context.Context, d time.Duration) error
}

// SimClock is a simulated clock: Wait returns at once and moves the clock
// forward by d. Sends through it are thereby serialised in simulated time,
// as by one worker; model several concurrent workers with Run instead.
// The zero value starts at 0 and is ready to use; it is safe for concurrent use.
type SimClock struct{ ns atomic.Int64 }

// Now returns the simulated time.
func (c *SimClock) Now() time.Duration { return time.Duration(c.ns.Load()) }

// Advance moves the clock forward by d (d <= 0 does nothing).
func (c *SimClock) Advance(d time.Duration) {
	if d > 0 {
		c.ns.Add(int64(d))
	}
}

// Wait advances the clock by d unless ctx is already done.
func (c *SimClock) Wait(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.Advance(d)
	return nil
}

// RealClock waits in real time, for benchmarks against a real queue. Waits
// longer than a couple of milliseconds sleep for most of their length (a
// timer, so ctx can interrupt) and spin, yielding, for the rest: sleeping
// alone overshoots by the timer slack, which would distort sub-millisecond
// latencies.
type RealClock struct{ origin time.Time }

// NewRealClock returns a RealClock whose origin is now.
func NewRealClock() *RealClock { return &RealClock{origin: time.Now()} }

// Now returns the real time since the origin.
func (c *RealClock) Now() time.Duration { return time.Since(c.origin) }

// spinBelow is how much of a wait is spun rather than slept.
const spinBelow = time.Millisecond

// Wait blocks for d or until ctx is done.
func (c *RealClock) Wait(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	if d > 2*spinBelow {
		t := time.NewTimer(d - spinBelow)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return err
		}
		runtime.Gosched()
	}
	return nil
}

// Sink is a Send whose latency follows a Model that may be swapped mid-run.
// It is safe for concurrent use.
type Sink struct {
	clock Clock
	model atomic.Pointer[Model]

	mu  sync.Mutex // guards rng
	rng *rand.Rand

	sends, items, busy atomic.Int64
}

// NewSink returns a Sink following m on clock c, with noise seeded by seed.
func NewSink(m Model, c Clock, seed uint64) *Sink {
	s := &Sink{clock: c, rng: rand.New(rand.NewPCG(seed, 0x2545f4914f6cdd1d))}
	s.SetModel(m)
	return s
}

// SetModel changes the model for the Sends that start from now on.
func (s *Sink) SetModel(m Model) { s.model.Store(&m) }

// Model returns the current model.
func (s *Sink) Model() Model { return *s.model.Load() }

// Send takes as long as the model says for items items, on the Sink's clock,
// and returns that latency. It fails only if ctx ends during the wait.
func (s *Sink) Send(ctx context.Context, items int) (time.Duration, error) {
	m := s.model.Load()
	s.mu.Lock()
	u := s.rng.Float64()
	s.mu.Unlock()
	lat := time.Duration(m.noisy(items, u))
	if err := s.clock.Wait(ctx, lat); err != nil {
		return 0, err
	}
	s.sends.Add(1)
	s.items.Add(int64(max(items, 0)))
	s.busy.Add(int64(lat))
	return lat, nil
}

// Sends returns the number of completed Sends.
func (s *Sink) Sends() int64 { return s.sends.Load() }

// Items returns the number of items in completed Sends.
func (s *Sink) Items() int64 { return s.items.Load() }

// Busy returns the total modelled latency of completed Sends.
func (s *Sink) Busy() time.Duration { return time.Duration(s.busy.Load()) }

// SendFunc adapts s to the queue's SendFunc shape (func(ctx, []T) error).
// The batch is not kept.
func SendFunc[T any](s *Sink) func(ctx context.Context, batch []T) error {
	return func(ctx context.Context, batch []T) error {
		_, err := s.Send(ctx, len(batch))
		return err
	}
}
