package batch

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"time"
)

var (
	// ErrSendPanic is wrapped by the error Attempt reports for a send that
	// panicked. The concrete error is a *PanicError carrying the value.
	ErrSendPanic = errors.New("batch: send panicked")
	// ErrAttemptsExhausted is wrapped by the error Attempt returns once
	// MaxAttempts sends have failed; the same error also wraps the last
	// send's error, so errors.Is works on either.
	ErrAttemptsExhausted = errors.New("batch: send attempts exhausted")
)

// PanicError is a recovered panic of a send. errors.Is(err, ErrSendPanic) is
// true, and when the panic value is itself an error, errors.Is/As also reach it.
type PanicError struct {
	Value any    // what was passed to panic
	Stack string // the innermost frames of the panicking goroutine, "fn (file:line)" joined by " <- "
}

// Error describes the panic and where it happened.
func (e *PanicError) Error() string {
	return fmt.Sprintf("%v: %v [at %s]", ErrSendPanic, e.Value, e.Stack)
}

// Unwrap returns ErrSendPanic and, when the panic value is an error, that error.
func (e *PanicError) Unwrap() []error {
	if err, ok := e.Value.(error); ok {
		return []error{ErrSendPanic, err}
	}
	return []error{ErrSendPanic}
}

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent wraps err so that Attempt stops retrying at once, e.g. for a
// batch the sink rejects as too large. errors.Is/As still see err.
// Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err (or an error it wraps) was marked by Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// Attempt calls send until it returns nil, at most policy.MaxAttempts times
// (after RetryPolicy.WithDefaults), waiting between attempts as NewBackoff(policy)
// says with jitter from the global random source.
//
//   - A panic in send is recovered and treated as a failed attempt whose error
//     is a *PanicError (errors.Is(err, ErrSendPanic)).
//   - onRetry, when not nil, is called after each failed attempt that will be
//     followed by another, before the wait, with the 1-based number of the
//     attempt that failed and its error. It runs on the caller's goroutine.
//   - ctx is checked before every attempt and interrupts a wait: Attempt then
//     returns an error wrapping ctx.Err() and the last send error, if any. send
//     is never called with an already-done ctx by Attempt.
//   - An error marked by Permanent ends the attempts at once.
//   - After the last failed attempt the error wraps ErrAttemptsExhausted and
//     the last send error.
//
// The first attempt is the fast path: when it succeeds, Attempt allocates
// nothing. Attempt is safe for concurrent use (it keeps no state).
func Attempt(ctx context.Context, policy RetryPolicy, send func(ctx context.Context) error, onRetry func(attempt int, err error)) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("batch: not sent: %w", err)
	}
	err := callRecover(ctx, send)
	if err == nil {
		return nil
	}
	return retry(ctx, policy, send, onRetry, err)
}

// retry is the slow path of Attempt, kept apart so the first attempt stays
// small; lastErr is the error of the first attempt.
func retry(ctx context.Context, policy RetryPolicy, send func(ctx context.Context) error, onRetry func(attempt int, err error), lastErr error) error {
	policy = policy.WithDefaults()
	maxAttempts := max(policy.MaxAttempts, 1)
	if policy.MaxAttempts == Forever {
		maxAttempts = math.MaxInt
	}
	backoff := NewBackoff(policy)
	var timer *time.Timer
	for attempt := 1; ; attempt++ {
		if IsPermanent(lastErr) {
			return fmt.Errorf("batch: send failed permanently on attempt %d: %w", attempt, lastErr)
		}
		if attempt >= maxAttempts {
			return fmt.Errorf("%w after %d attempts: %w", ErrAttemptsExhausted, attempt, lastErr)
		}
		if onRetry != nil {
			onRetry(attempt, lastErr)
		}
		// A timer rather than time.Sleep: cancelling ctx must end the wait.
		d := backoff.Delay(attempt, nil)
		if timer == nil {
			timer = time.NewTimer(d)
			defer timer.Stop()
		} else {
			timer.Reset(d) // Go >= 1.23: Reset after a fired timer leaves no stale value
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("batch: retry wait after attempt %d interrupted: %w (last send error: %w)", attempt, ctx.Err(), lastErr)
		case <-timer.C:
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("batch: retry after attempt %d abandoned: %w (last send error: %w)", attempt, err, lastErr)
		}
		lastErr = callRecover(ctx, send)
		if lastErr == nil {
			return nil
		}
	}
}

// callRecover calls send, turning a panic into a *PanicError.
func callRecover(ctx context.Context, send func(ctx context.Context) error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: panicStack()}
		}
	}()
	return send(ctx)
}

// panicStackFrames bounds the stack summary: enough to find the panicking
// line in the user's Send without copying a whole goroutine dump into every
// error (which OnDrop handlers tend to log).
const panicStackFrames = 6

// panicStack summarises the stack of a deferred function running because of
// a panic: the frames from the panic site outwards, runtime frames skipped.
func panicStack() string {
	var pcs [32]uintptr
	n := runtime.Callers(3, pcs[:]) // skip Callers, panicStack, the deferred func
	frames := runtime.CallersFrames(pcs[:n])
	var b strings.Builder
	kept := 0
	for kept < panicStackFrames {
		f, more := frames.Next()
		if f.Function != "" && !strings.HasPrefix(f.Function, "runtime.") {
			if strings.HasSuffix(f.Function, "batch.callRecover") {
				break // frames beyond are the queue's, not the sender's
			}
			if kept > 0 {
				b.WriteString(" <- ")
			}
			fmt.Fprintf(&b, "%s (%s:%d)", f.Function, trimPath(f.File), f.Line)
			kept++
		}
		if !more {
			break
		}
	}
	if kept == 0 {
		return "unknown"
	}
	return b.String()
}

// trimPath keeps the last two path elements: "pkg/file.go".
func trimPath(file string) string {
	i := strings.LastIndexByte(file, '/')
	if i <= 0 {
		return file
	}
	if j := strings.LastIndexByte(file[:i], '/'); j >= 0 {
		return file[j+1:]
	}
	return file
}
