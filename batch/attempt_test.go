package batch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fast is a policy whose waits are too short to slow the tests down.
var fast = RetryPolicy{MaxAttempts: 5, InitialBackoff: time.Microsecond, MaxBackoff: 10 * time.Microsecond}

var errBoom = errors.New("boom")

func TestAttemptSuccessFirstTime(t *testing.T) {
	calls := 0
	err := Attempt(context.Background(), fast, func(context.Context) error { calls++; return nil },
		func(int, error) { t.Error("onRetry called on success") })
	if err != nil || calls != 1 {
		t.Fatalf("err=%v calls=%d", err, calls)
	}
}

func TestAttemptSuccessAfterFailures(t *testing.T) {
	for k := 1; k < 5; k++ {
		calls := 0
		var retries []int
		err := Attempt(context.Background(), fast, func(context.Context) error {
			calls++
			if calls <= k {
				return fmt.Errorf("attempt %d: %w", calls, errBoom)
			}
			return nil
		}, func(attempt int, err error) {
			retries = append(retries, attempt)
			if !errors.Is(err, errBoom) {
				t.Errorf("onRetry got %v", err)
			}
		})
		if err != nil {
			t.Fatalf("k=%d: %v", k, err)
		}
		if calls != k+1 || len(retries) != k || retries[k-1] != k {
			t.Fatalf("k=%d: calls=%d retries=%v", k, calls, retries)
		}
	}
}

func TestAttemptExhausted(t *testing.T) {
	for _, max := range []int{1, 2, 5, 7} {
		p := fast
		p.MaxAttempts = max
		calls, retries := 0, 0
		err := Attempt(context.Background(), p, func(context.Context) error { calls++; return errBoom },
			func(int, error) { retries++ })
		if calls != max || retries != max-1 {
			t.Errorf("MaxAttempts=%d: %d calls, %d retries", max, calls, retries)
		}
		if !errors.Is(err, ErrAttemptsExhausted) || !errors.Is(err, errBoom) {
			t.Errorf("MaxAttempts=%d: err %v should wrap ErrAttemptsExhausted and the cause", max, err)
		}
	}
	// 0 selects the default of 5.
	calls := 0
	p := fast
	p.MaxAttempts = 0
	_ = Attempt(context.Background(), p, func(context.Context) error { calls++; return errBoom }, nil)
	if calls != DefaultMaxAttempts {
		t.Errorf("default MaxAttempts made %d calls", calls)
	}
}

func sendPanics() error { panic("kaboom") }

func TestAttemptRecoversPanic(t *testing.T) {
	calls := 0
	var seen []error
	err := Attempt(context.Background(), fast, func(context.Context) error {
		calls++
		if calls == 1 {
			return sendPanics()
		}
		return nil
	}, func(_ int, err error) { seen = append(seen, err) })
	if err != nil || calls != 2 || len(seen) != 1 {
		t.Fatalf("err=%v calls=%d seen=%v", err, calls, seen)
	}
	var pe *PanicError
	if !errors.Is(seen[0], ErrSendPanic) || !errors.As(seen[0], &pe) || pe.Value != "kaboom" {
		t.Fatalf("panic error %#v", seen[0])
	}
	if !strings.Contains(pe.Stack, "sendPanics") || !strings.Contains(pe.Stack, "attempt_test.go") {
		t.Errorf("stack summary %q does not point at the panicking function", pe.Stack)
	}
	if strings.Contains(pe.Stack, "runtime.") {
		t.Errorf("stack summary %q has runtime frames", pe.Stack)
	}
	t.Logf("%v", seen[0])

	// Every attempt panicking: exhausted, the panic is the cause.
	err = Attempt(context.Background(), fast, func(context.Context) error { panic(errBoom) }, nil)
	if !errors.Is(err, ErrAttemptsExhausted) || !errors.Is(err, ErrSendPanic) || !errors.Is(err, errBoom) {
		t.Errorf("got %v", err)
	}
	// panic(nil) is a panic too.
	err = Attempt(context.Background(), RetryPolicy{MaxAttempts: 1}, func(context.Context) error { panic(nil) }, nil)
	if !errors.Is(err, ErrSendPanic) {
		t.Errorf("panic(nil): got %v", err)
	}
}

func TestAttemptCancelDuringBackoff(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p := RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Hour, MaxBackoff: time.Hour}
	done := make(chan error, 1)
	var calls atomic.Int32
	entered := make(chan struct{})
	go func() {
		done <- Attempt(ctx, p, func(context.Context) error { calls.Add(1); return errBoom },
			func(int, error) { close(entered) })
	}()
	<-entered // the first attempt failed; Attempt is about to wait an hour
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || !errors.Is(err, errBoom) {
			t.Errorf("got %v, want context.Canceled and the send error", err)
		}
		if calls.Load() != 1 {
			t.Errorf("%d calls after cancel", calls.Load())
		}
	case <-time.After(time.Minute): // a hang guard, not a speed assertion
		t.Fatal("cancel did not interrupt the backoff wait")
	}
}

func TestAttemptDeadlineDuringBackoff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	p := RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Hour, MaxBackoff: time.Hour}
	called := false
	err := Attempt(ctx, p, func(context.Context) error { called = true; return errBoom }, nil)
	// On a slow machine the deadline may pass before the first attempt.
	if !errors.Is(err, context.DeadlineExceeded) || called != errors.Is(err, errBoom) {
		t.Errorf("got %v (send called: %v)", err, called)
	}
}

func TestAttemptDoneContextSendsNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Attempt(ctx, fast, func(context.Context) error { t.Error("send called"); return nil }, nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v", err)
	}
}

func TestAttemptPermanent(t *testing.T) {
	calls := 0
	err := Attempt(context.Background(), fast, func(context.Context) error {
		calls++
		return Permanent(fmt.Errorf("too large: %w", errBoom))
	}, func(int, error) { t.Error("onRetry called for a permanent error") })
	if calls != 1 || !errors.Is(err, errBoom) || !IsPermanent(err) {
		t.Errorf("calls=%d err=%v", calls, err)
	}
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
}

func TestAttemptConcurrent(t *testing.T) {
	// Attempt keeps no state: many goroutines at once, under -race.
	var wg sync.WaitGroup
	var total atomic.Int64
	for g := range 16 {
		wg.Go(func() {
			n := 0
			err := Attempt(context.Background(), fast, func(context.Context) error {
				n++
				total.Add(1)
				if n <= g%4 {
					return errBoom
				}
				return nil
			}, nil)
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if want := int64(16 + 4*(0+1+2+3)); total.Load() != want {
		t.Errorf("%d calls, want %d", total.Load(), want)
	}
}

func BenchmarkAttemptSuccess(b *testing.B) {
	ctx := context.Background()
	send := func(context.Context) error { return nil }
	b.ReportAllocs()
	for b.Loop() {
		if err := Attempt(ctx, RetryPolicy{}, send, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAttemptForever: MaxAttempts Forever retries until the context ends.
func TestAttemptForever(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := Attempt(ctx, RetryPolicy{MaxAttempts: Forever, InitialBackoff: time.Microsecond, MaxBackoff: time.Microsecond},
		func(context.Context) error {
			calls++
			if calls == 50 { // far past the default of 5
				cancel()
			}
			return errors.New("down")
		}, nil)
	if !errors.Is(err, context.Canceled) || calls != 50 {
		t.Fatalf("Attempt = %v after %d calls; want Canceled after 50", err, calls)
	}
}
