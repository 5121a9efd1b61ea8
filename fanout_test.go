package vinequeue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// recorder is a fan-out target that keeps a copy of every batch it took.
type recorder struct {
	mu      sync.Mutex
	calls   int
	batches [][]int
	fail    func(call int) error // nil: always succeed
}

func (r *recorder) send(_ context.Context, batch []int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.fail != nil {
		if err := r.fail(r.calls); err != nil {
			return err
		}
	}
	r.batches = append(r.batches, slices.Clone(batch))
	return nil
}

func (r *recorder) snapshot() (calls int, batches [][]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls, slices.Clone(r.batches)
}

// fastRetry keeps the tests' backoffs short; a test asserts counts, never time.
var fastRetry = RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}

func TestFanOutAllSucceed(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // other tests of the package may still be winding down
	var a, b, c recorder
	send := FanOut(a.send, b.send, c.send)
	batch := []int{1, 2, 3}
	if err := send(context.Background(), batch); err != nil {
		t.Fatalf("send: %v", err)
	}
	for name, r := range map[string]*recorder{"a": &a, "b": &b, "c": &c} {
		calls, got := r.snapshot()
		if calls != 1 || len(got) != 1 || !slices.Equal(got[0], batch) {
			t.Errorf("%s: calls=%d batches=%v, want one call with %v", name, calls, got, batch)
		}
	}
}

func TestFanOutFailThenRecoverSendsHealthyTargetOnce(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // other tests of the package may still be winding down
	errFlaky := errors.New("flaky")
	healthy := &recorder{}
	flaky := &recorder{fail: func(call int) error {
		if call <= 2 {
			return errFlaky
		}
		return nil
	}}
	send, err := NewFanOut(FanOutConfig[int]{Targets: []FanOutTarget[int]{
		{Name: "healthy", Send: healthy.send, Retry: fastRetry},
		{Name: "flaky", Send: flaky.send, Retry: fastRetry},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := send(context.Background(), []int{7}); err != nil {
		t.Fatalf("send: %v (flaky recovers on its 3rd attempt)", err)
	}
	if calls, got := healthy.snapshot(); calls != 1 || len(got) != 1 {
		t.Errorf("healthy: %d calls, %d batches; want 1 and 1 (no duplicate)", calls, len(got))
	}
	if calls, got := flaky.snapshot(); calls != 3 || len(got) != 1 {
		t.Errorf("flaky: %d calls, %d batches; want 3 and 1", calls, len(got))
	}
}

func TestFanOutPermanentFailureNamesTarget(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // other tests of the package may still be winding down
	errDown := errors.New("target down")
	errAlsoDown := errors.New("also down")
	healthy := &recorder{}
	down := &recorder{fail: func(int) error { return errDown }}
	alsoDown := &recorder{fail: func(int) error { return errAlsoDown }}
	send, err := NewFanOut(FanOutConfig[int]{Targets: []FanOutTarget[int]{
		{Name: "healthy", Send: healthy.send, Retry: fastRetry},
		{Name: "down", Send: down.send, Retry: fastRetry},
		{Name: "also-down", Send: alsoDown.send, Retry: RetryPolicy{MaxAttempts: 1}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = send(context.Background(), []int{1})
	if err == nil {
		t.Fatal("send succeeded with a target that always fails")
	}
	if !errors.Is(err, errDown) || !errors.Is(err, errAlsoDown) {
		t.Errorf("errors.Is does not see both causes in %v", err)
	}
	for _, name := range []string{`"down"`, `"also-down"`} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name target %s", err, name)
		}
	}
	if strings.Contains(err.Error(), "healthy") {
		t.Errorf("error %q names the healthy target", err)
	}
	var te *FanOutError
	if !errors.As(err, &te) || te.Target != "down" || te.Index != 1 || te.Attempts != 3 {
		t.Errorf("errors.As: %+v, want target down, index 1, 3 attempts", te)
	}
	if calls, _ := down.snapshot(); calls != 3 {
		t.Errorf("down: %d calls, want 3 (its own MaxAttempts)", calls)
	}
	if calls, _ := alsoDown.snapshot(); calls != 1 {
		t.Errorf("also-down: %d calls, want 1", calls)
	}
	if calls, _ := healthy.snapshot(); calls != 1 {
		t.Errorf("healthy: %d calls, want 1", calls)
	}
}

// TestFanOutQueueRetry covers the queue retrying a batch that FanOut failed:
// without BatchKey the healthy target takes it again (documented
// at-least-once), with BatchKey it is skipped.
func TestFanOutQueueRetry(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // other tests of the package may still be winding down
	batchKey := func(b []int) string { return fmt.Sprint(b) }
	for _, tc := range []struct {
		name        string
		key         func([]int) string
		wantHealthy int
	}{
		{"no BatchKey: at least once", nil, 2},
		{"BatchKey: once", batchKey, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			healthy := &recorder{}
			// Down for the whole first queue attempt, up for the second.
			down := &recorder{fail: func(call int) error {
				if call == 1 {
					return errors.New("down")
				}
				return nil
			}}
			send, err := NewFanOut(FanOutConfig[int]{
				Targets: []FanOutTarget[int]{
					{Name: "healthy", Send: healthy.send, Retry: RetryPolicy{MaxAttempts: 1}},
					{Name: "down", Send: down.send, Retry: RetryPolicy{MaxAttempts: 1}},
				},
				BatchKey: tc.key,
			})
			if err != nil {
				t.Fatal(err)
			}
			batch := []int{4, 5}
			if err := send(context.Background(), batch); err == nil {
				t.Fatal("first attempt succeeded")
			}
			if err := send(context.Background(), batch); err != nil {
				t.Fatalf("queue retry: %v", err)
			}
			if calls, _ := healthy.snapshot(); calls != tc.wantHealthy {
				t.Errorf("healthy: %d calls, want %d", calls, tc.wantHealthy)
			}
			if _, got := down.snapshot(); len(got) != 1 {
				t.Errorf("down took %d batches, want 1", len(got))
			}
			// A new batch with the same content after full delivery is sent
			// again to everybody: complete batches are forgotten.
			if err := send(context.Background(), batch); err != nil {
				t.Fatal(err)
			}
			if calls, _ := healthy.snapshot(); calls != tc.wantHealthy+1 {
				t.Errorf("healthy: %d calls after a third send, want %d", calls, tc.wantHealthy+1)
			}
		})
	}
}

func TestFanOutMaxPendingEvictsOldest(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // other tests of the package may still be winding down
	healthy := &recorder{}
	var downUp atomic.Bool // false: down fails
	down := &recorder{fail: func(int) error {
		if downUp.Load() {
			return nil
		}
		return errors.New("down")
	}}
	send, err := NewFanOut(FanOutConfig[int]{
		Targets: []FanOutTarget[int]{
			{Name: "healthy", Send: healthy.send, Retry: RetryPolicy{MaxAttempts: 1}},
			{Name: "down", Send: down.send, Retry: RetryPolicy{MaxAttempts: 1}},
		},
		BatchKey:   func(b []int) string { return fmt.Sprint(b) },
		MaxPending: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // batch {0} is evicted by {2}
		if err := send(context.Background(), []int{i}); err == nil {
			t.Fatal("down target succeeded")
		}
	}
	downUp.Store(true)
	for i := range 3 {
		if err := send(context.Background(), []int{i}); err != nil {
			t.Fatal(err)
		}
	}
	// 3 first attempts + the retry of the evicted batch {0}, a duplicate
	// (never a loss).
	if calls, _ := healthy.snapshot(); calls != 4 {
		t.Errorf("healthy: %d calls, want 4", calls)
	}
}

func TestFanOutRecoversTargetPanic(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // other tests of the package may still be winding down
	healthy := &recorder{}
	panicky := func(context.Context, []int) error { panic("boom") }
	send, err := NewFanOut(FanOutConfig[int]{Targets: []FanOutTarget[int]{
		{Name: "panicky", Send: panicky, Retry: RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond}},
		{Name: "healthy", Send: healthy.send},
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = send(context.Background(), []int{1})
	if err == nil || !strings.Contains(err.Error(), "panicked: boom") || !strings.Contains(err.Error(), `"panicky"`) {
		t.Fatalf("err = %v, want the recovered panic of target panicky", err)
	}
	if calls, _ := healthy.snapshot(); calls != 1 {
		t.Errorf("healthy: %d calls, want 1", calls)
	}
}

func TestFanOutContextCancelStopsRetrying(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // other tests of the package may still be winding down
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	failing := func(context.Context, []int) error {
		if calls.Add(1) == 1 {
			cancel() // the queue's deadline passes during the first attempt
		}
		return errors.New("unavailable")
	}
	send, err := NewFanOut(FanOutConfig[int]{Targets: []FanOutTarget[int]{
		// A backoff no test could wait out: only the cancellation ends it.
		{Name: "failing", Send: failing, Retry: RetryPolicy{MaxAttempts: 5, InitialBackoff: time.Hour}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = send(ctx, []int{1})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

func TestFanOutInvalidConfig(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // other tests of the package may still be winding down
	ok := func(context.Context, []int) error { return nil }
	if err := FanOut[int]()(context.Background(), []int{1}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("FanOut() send: %v, want ErrInvalidConfig", err)
	}
	if err := FanOut(ok, nil)(context.Background(), []int{1}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("FanOut(ok, nil) send: %v, want ErrInvalidConfig", err)
	}
	for name, cfg := range map[string]FanOutConfig[int]{
		"negative MaxPending": {Targets: []FanOutTarget[int]{{Send: ok}}, MaxPending: -1},
		"negative attempts":   {Targets: []FanOutTarget[int]{{Send: ok, Retry: RetryPolicy{MaxAttempts: -2}}}},
		"jitter above 1":      {Targets: []FanOutTarget[int]{{Send: ok, Retry: RetryPolicy{Jitter: 2}}}},
		"multiplier below 1":  {Targets: []FanOutTarget[int]{{Send: ok, Retry: RetryPolicy{Multiplier: 0.5}}}},
	} {
		if _, err := NewFanOut(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", name, err)
		}
	}
}

// TestFanOutConcurrentBatches runs many batches through one FanOut at once,
// as a queue with several Workers does; -race checks the shared state.
func TestFanOutConcurrentBatches(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // other tests of the package may still be winding down
	var sums [3]atomic.Int64
	targets := make([]FanOutTarget[int], len(sums))
	for i := range targets {
		targets[i] = FanOutTarget[int]{Send: func(_ context.Context, b []int) error {
			for _, v := range b {
				sums[i].Add(int64(v))
			}
			return nil
		}}
	}
	send, err := NewFanOut(FanOutConfig[int]{Targets: targets, BatchKey: func(b []int) string { return fmt.Sprint(b) }})
	if err != nil {
		t.Fatal(err)
	}
	const workers, batches = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range batches {
				if err := send(context.Background(), []int{w*batches + i}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	const n = workers * batches
	for i := range sums {
		if got, want := sums[i].Load(), int64(n*(n-1)/2); got != want {
			t.Errorf("target %d: sum %d, want %d", i, got, want)
		}
	}
}

// ExampleFanOut sends every batch to two sinks. The search sink fails once
// and recovers within FanOut's own retries, so the archive is not sent the
// batch twice.
func ExampleFanOut() {
	var archived, indexed [][]string
	archive := func(_ context.Context, batch []string) error {
		archived = append(archived, slices.Clone(batch)) // a sink must not keep batch itself
		return nil
	}
	searchFailures := 1
	search := func(_ context.Context, batch []string) error {
		if searchFailures > 0 {
			searchFailures--
			return errors.New("search index busy")
		}
		indexed = append(indexed, slices.Clone(batch))
		return nil
	}

	send := FanOut(archive, search) // use as Config.Send
	err := send(context.Background(), []string{"a", "b"})
	fmt.Println("err:", err)
	fmt.Println("archived:", archived)
	fmt.Println("indexed:", indexed)
	// Output:
	// err: <nil>
	// archived: [[a b]]
	// indexed: [[a b]]
}

// TestFanOutThroughQueue runs FanOut as a queue's Send with several workers:
// one target fails its first two calls, within FanOut's own retries, so each
// target receives every item exactly once and the queue sees no error.
func TestFanOutThroughQueue(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // other tests of the package may still be winding down
	// Per target: item -> *atomic.Int32 deliveries.
	var counts [2]sync.Map
	target := func(i int) SendFunc[int] {
		return func(_ context.Context, batch []int) error {
			for _, v := range batch {
				n, _ := counts[i].LoadOrStore(v, new(atomic.Int32))
				n.(*atomic.Int32).Add(1)
			}
			return nil
		}
	}
	var flakyCalls atomic.Int32
	flaky := func(ctx context.Context, batch []int) error {
		if flakyCalls.Add(1) <= 2 {
			return errors.New("warming up")
		}
		return target(1)(ctx, batch)
	}
	send, err := NewFanOut(FanOutConfig[int]{Targets: []FanOutTarget[int]{
		{Name: "steady", Send: target(0)},
		{Name: "flaky", Send: flaky, Retry: fastRetry},
	}})
	if err != nil {
		t.Fatal(err)
	}
	q, err := New(Config[int]{
		Send:          send,
		BatchSize:     50,
		Workers:       3,
		FlushInterval: 10 * time.Millisecond,
		OnDrop:        func(b []int, reason error) { t.Errorf("dropped %d items: %v", len(b), reason) },
	})
	if err != nil {
		t.Fatal(err)
	}
	const producers, each = 4, 500
	var wg sync.WaitGroup
	for g := range producers {
		wg.Go(func() {
			for i := range each {
				if err := q.Enqueue(g*each + i); err != nil {
					t.Errorf("Enqueue: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Delivered != producers*each || st.Retries != 0 {
		t.Errorf("stats %+v: want %d delivered and no queue retry", st, producers*each)
	}
	for i := range counts {
		seen := 0
		counts[i].Range(func(k, v any) bool {
			seen++
			if n := v.(*atomic.Int32).Load(); n != 1 {
				t.Errorf("target %d got item %d %d times", i, k, n)
			}
			return true
		})
		if seen != producers*each {
			t.Errorf("target %d got %d distinct items, want %d", i, seen, producers*each)
		}
	}
}

// TestFanOutPermanentNotRetried: a target's Permanent error is not retried
// (FanOut had a retry loop of its own that retried it MaxAttempts times).
func TestFanOutPermanentNotRetried(t *testing.T) {
	var calls atomic.Int32
	send, err := NewFanOut(FanOutConfig[int]{Targets: []FanOutTarget[int]{{
		Send: func(context.Context, []int) error {
			calls.Add(1)
			return Permanent(errors.New("record too large"))
		},
		Retry: fastRetry,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	err = send(context.Background(), []int{1})
	var fe *FanOutError
	if !errors.As(err, &fe) || fe.Attempts != 1 || calls.Load() != 1 {
		t.Fatalf("send = %v after %d calls; want a FanOutError after 1 attempt", err, calls.Load())
	}
}
