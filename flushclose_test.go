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
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}
