package vinequeue_test

import (
	"context"
	"testing"
	"time"
)

// flushThenClose is how a test ends a queue whose every item must be
// delivered first: Flush (within the given time, so that a queue that
// never delivers fails the test rather than hanging it), then Close.
func flushThenClose(t *testing.T, q interface {
	Flush(context.Context) error
	Close() error
}, within time.Duration) {
	t.Helper()
	flushWithin(t, q, within)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}

// flushWithin flushes q, failing the test if that takes longer than within
// (a queue that never delivers fails rather than hangs the test).
func flushWithin(t *testing.T, q interface{ Flush(context.Context) error }, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// requeueThenFlush puts q's dead letters back on the main log
// (RequeueDeadLetters) and flushes q within 30 s, failing the test on an
// error from either.
func requeueThenFlush(t *testing.T, q interface {
	RequeueDeadLetters(...uint64) (int, error)
	Flush(context.Context) error
}) {
	t.Helper()
	if _, err := q.RequeueDeadLetters(); err != nil {
		t.Fatal(err)
	}
	flushWithin(t, q, 30*time.Second)
}
