package vinequeue

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vineroute/vinequeue/batch"
)

// FanOutTarget is one destination of a fan-out: a SendFunc with a name (used in
// errors) and the retry policy FanOut applies to it on its own.
type FanOutTarget[T any] struct {
	// Name identifies the target in errors; default "target[i]" by position.
	Name string
	// Send delivers a batch to this target. It shares the batch with the other
	// targets, concurrently: it must treat the batch and its items as
	// read-only, and, like every SendFunc, must not keep them after returning.
	Send SendFunc[T]
	// Retry is applied by FanOut to this target alone, before the queue's own
	// Config.Retry. Zero fields take the fan-out defaults: MaxAttempts 3,
	// InitialBackoff 10ms, Multiplier 2, MaxBackoff 1s, Jitter 0.2; a
	// negative Jitter means none, as in Config.Retry.
	Retry RetryPolicy
}

// FanOutConfig configures NewFanOut.
type FanOutConfig[T any] struct {
	// Targets receive every batch. At least one is required.
	Targets []FanOutTarget[T]

	// BatchKey, when set, identifies a batch across the queue's retries so
	// that targets which already took a batch are skipped when the queue
	// sends the same batch again (see NewFanOut). It must be a function of
	// the batch's content (a hash of the encoded items, an id carried by the
	// items): the queue reuses the batch slice, so its address means nothing.
	// Two batches with the same key are the same batch to FanOut.
	BatchKey func(batch []T) string

	// MaxPending bounds how many partially delivered batches FanOut remembers
	// by BatchKey; default 1024. The oldest is forgotten first, which can only
	// cause a duplicate delivery to a target, never a missed one.
	MaxPending int
}

// FanOutError is the error of one fan-out target that still failed after its
// own retries. FanOut returns these joined with errors.Join, so errors.Is
// and errors.As see through to each target's error.
type FanOutError struct {
	Target   string // FanOutTarget.Name
	Index    int    // position in FanOutConfig.Targets
	Attempts int    // Send calls made for this batch
	Err      error  // the last error
}

// Error names the target, its attempts and its last error.
func (e *FanOutError) Error() string {
	return fmt.Sprintf("vinequeue: fan-out target %q failed after %d attempt(s): %v", e.Target, e.Attempts, e.Err)
}

// Unwrap returns the target's last error, for errors.Is and errors.As.
func (e *FanOutError) Unwrap() error { return e.Err }

// FanOut returns a SendFunc that delivers each batch to every target, using
// the default per-target retry policy. It is NewFanOut with targets named
// "target[0]", "target[1]", ... and no BatchKey. If the configuration is
// invalid (no target, a nil target), every call of the returned SendFunc
// returns that ErrInvalidConfig error, so the mistake surfaces through the
// queue's retries and OnDrop instead of a panic.
func FanOut[T any](targets ...SendFunc[T]) SendFunc[T] {
	cfg := FanOutConfig[T]{Targets: make([]FanOutTarget[T], len(targets))}
	for i, t := range targets {
		cfg.Targets[i].Send = t
	}
	send, err := NewFanOut(cfg)
	if err != nil {
		return func(context.Context, []T) error { return err }
	}
	return send
}

// NewFanOut returns a SendFunc that delivers each batch to every target.
//
// Targets run concurrently and share the batch, so they must not modify it.
// Each target is retried by FanOut itself, with its own FanOutTarget.Retry
// policy and the queue's context, until it succeeds or runs out of attempts.
// That is the partial-failure rule: a target that fails and then recovers
// within its own retries costs the healthy targets nothing, and each target
// receives a batch once. The returned error is nil when every target took the
// batch; otherwise it joins one *FanOutError per target that gave up
// (errors.Join), naming it; errors.Is(err, cause) matches each target's own
// error. The call returns only when every target is done with the batch, so
// each target sees the batches of a key (EnqueueKey) in the queue's order.
//
// The queue cannot tell FanOut that a call is a retry of the previous batch
// (it retries every error, and reuses the slice for the next batch), so when
// FanOut returns an error the queue's retry sends the batch again to all
// targets, and the ones that had already taken it get it twice: at-least-once
// per target. Setting BatchKey turns that into once per target: FanOut then
// remembers, per key, which targets took a partially delivered batch, and
// skips them when the same batch comes back.
//
// FanOut's own retries happen inside one Send call: the queue's
// Stats.Retries does not count them. A batch that the queue finally drops
// stays remembered under its BatchKey until MaxPending newer partial
// failures push it out.
//
// A panic in a target is recovered and treated as that target's error (a
// panic on FanOut's goroutines would otherwise end the process, since the
// queue's recover cannot reach them).
func NewFanOut[T any](cfg FanOutConfig[T]) (SendFunc[T], error) {
	if len(cfg.Targets) == 0 {
		return nil, invalid("FanOutConfig.Targets", "at least one target is required")
	}
	if cfg.MaxPending < 0 {
		return nil, invalid("FanOutConfig.MaxPending", "must not be negative, got %d", cfg.MaxPending)
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = 1024
	}
	f := &fanOut[T]{
		targets:    make([]FanOutTarget[T], len(cfg.Targets)),
		batchKey:   cfg.BatchKey,
		maxPending: cfg.MaxPending,
	}
	for i, t := range cfg.Targets {
		if t.Send == nil {
			return nil, invalid("FanOutConfig.Targets", "target %d has a nil Send", i)
		}
		if t.Name == "" {
			t.Name = fmt.Sprintf("target[%d]", i)
		}
		r, err := fanOutRetry(t.Retry, i)
		if err != nil {
			return nil, err
		}
		t.Retry = r
		f.targets[i] = t
	}
	if f.batchKey != nil {
		f.pending = make(map[string]*list.Element)
		f.order = list.New()
	}
	return f.send, nil
}

// fanOutRetry fills r for target i: the fan-out's own defaults for
// MaxAttempts and MaxBackoff, which are smaller than the queue's (the queue
// retries the whole batch after FanOut gives up, so the attempts multiply),
// then the queue's defaults and validation for the rest.
func fanOutRetry(r RetryPolicy, i int) (RetryPolicy, error) {
	if r.MaxAttempts == 0 {
		r.MaxAttempts = 3
	}
	if r.MaxBackoff == 0 {
		r.MaxBackoff = max(time.Second, r.InitialBackoff)
	} else if r.MaxBackoff > 0 && r.MaxBackoff < r.InitialBackoff {
		r.MaxBackoff = r.InitialBackoff
	}
	return fillRetry(r, fmt.Sprintf("FanOutConfig.Targets[%d].Retry", i))
}

type fanOut[T any] struct {
	targets  []FanOutTarget[T]
	batchKey func([]T) string

	// pending maps a BatchKey to its element in order, whose Value is a
	// *fanOutPending; order is oldest first, for eviction at maxPending.
	mu         sync.Mutex
	pending    map[string]*list.Element
	order      *list.List
	maxPending int
}

type fanOutPending struct {
	key  string
	done []bool // per target: took this batch
}

func (f *fanOut[T]) send(ctx context.Context, batch []T) error {
	var key string
	done := make([]bool, len(f.targets))
	if f.batchKey != nil {
		key = f.batchKey(batch)
		f.mu.Lock()
		if e, ok := f.pending[key]; ok {
			copy(done, e.Value.(*fanOutPending).done)
		}
		f.mu.Unlock()
	}

	errs := make([]error, len(f.targets))
	var wg sync.WaitGroup
	first := -1
	for i := range f.targets {
		if done[i] {
			continue
		}
		if first < 0 {
			// The calling goroutine serves one target itself: with a single
			// target left (the common retry case) no goroutine is started.
			first = i
			continue
		}
		wg.Go(func() { errs[i] = f.deliver(ctx, i, batch) })
	}
	if first >= 0 {
		errs[first] = f.deliver(ctx, first, batch)
	}
	wg.Wait()

	failed := 0
	for i, err := range errs {
		if err == nil {
			done[i] = true
		} else {
			failed++
		}
	}
	if f.batchKey != nil {
		f.remember(key, done, failed == 0)
	}
	if failed == 0 {
		return nil
	}
	return errors.Join(errs...)
}

// remember records which targets took the batch named key; a batch every
// target took is forgotten.
func (f *fanOut[T]) remember(key string, done []bool, complete bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.pending[key]
	if complete {
		if ok {
			f.order.Remove(e)
			delete(f.pending, key)
		}
		return
	}
	if ok {
		p := e.Value.(*fanOutPending)
		for i, d := range done {
			p.done[i] = p.done[i] || d
		}
		f.order.MoveToBack(e)
		return
	}
	f.pending[key] = f.order.PushBack(&fanOutPending{key: key, done: done})
	for f.order.Len() > f.maxPending {
		oldest := f.order.Front()
		f.order.Remove(oldest)
		delete(f.pending, oldest.Value.(*fanOutPending).key)
	}
}

// deliver sends items to target i, retrying per its policy with the
// queue's one retry loop (batch.Attempt: backoff with jitter, panics
// recovered, Permanent errors not retried); the error is a *FanOutError or
// nil.
func (f *fanOut[T]) deliver(ctx context.Context, i int, items []T) error {
	t := &f.targets[i]
	attempts := 0
	err := batch.Attempt(ctx, t.Retry, func(ctx context.Context) error {
		attempts++
		return t.Send(ctx, items)
	}, nil)
	if err == nil {
		return nil
	}
	return &FanOutError{Target: t.Name, Index: i, Attempts: attempts, Err: err}
}
